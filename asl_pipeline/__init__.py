"""asl-pipeline: ResNet50 transfer learning for the ASL fingerspelling alphabet, run by DVC."""
import os

# TensorFlow's C++ start-up chatter buries the pipeline's own messages; errors still show.
# Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
