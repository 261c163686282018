"""asl-pipeline: ResNet50 transfer learning for the ASL fingerspelling alphabet, run by DVC."""
