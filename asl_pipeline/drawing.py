"""Pictures of what the model saw: Grad-CAM overlays and the hand skeleton, as RGB arrays and PNGs."""
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from asl_pipeline.atomic import atomic_file

HEATMAP_ALPHA = 0.4  # opacity of a heatmap over the photo outside the pipeline: params.yaml's explain.alpha

# MediaPipe's 21-keypoint hand: wrist 0, then four points per finger from thumb (1-4) to little finger (17-20).
HAND_CONNECTIONS = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
                    (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19),
                    (19, 20))


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float) -> np.ndarray:
    """The heatmap, stretched to the image's own size and jet-coloured, blended over it with `alpha`."""
    height, width = image.shape[:2]
    stretched = cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    levels = np.round(255 * np.clip(stretched, 0, 1)).astype(np.uint8)
    # OpenCV colour maps are BGR; everything else here is RGB.
    colored = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blended = alpha * colored.astype(np.float32) + (1 - alpha) * image.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def save_png(path: Path, rgb: np.ndarray) -> None:
    """The pixels alone, at their own size."""
    with atomic_file(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def draw_hand(image: np.ndarray, hand) -> np.ndarray:
    """The photo with the hand skeleton the model saw, or "no hand found" written on it."""
    canvas = np.ascontiguousarray(image.copy())
    thickness = max(1, round(max(image.shape[:2]) / 150))
    if hand is None:
        cv2.putText(canvas, "no hand found", (thickness * 3, thickness * 12), cv2.FONT_HERSHEY_SIMPLEX,
                    thickness * 0.4, (255, 64, 64), thickness, cv2.LINE_AA)
        return canvas
    points = np.round(hand.landmarks[:, :2]).astype(int)
    for a, b in HAND_CONNECTIONS:
        cv2.line(canvas, tuple(points[a]), tuple(points[b]), (255, 255, 255), thickness, cv2.LINE_AA)
    for point in points:
        cv2.circle(canvas, tuple(point), thickness + 1, (255, 0, 80), -1, cv2.LINE_AA)
    return canvas


def explanation(image: np.ndarray, heatmap: np.ndarray | None, hand, uses_hands: bool, alpha: float):
    """Side by side: the Grad-CAM overlay (if the model has a backbone) and the skeleton (if it uses hands)."""
    panels = []
    if heatmap is not None:
        panels.append(overlay(image, heatmap, alpha))
    if uses_hands:
        panels.append(draw_hand(image, hand))
    return np.hstack(panels) if panels else image
