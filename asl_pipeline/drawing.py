"""Pictures of what the model saw: Grad-CAM overlays and the hand skeleton (its joints coloured by their
weight for a landmarks-only model), as RGB arrays and PNGs."""
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


def _weight_colours(levels: np.ndarray) -> np.ndarray:
    """RGB uint8 of viridis at levels in [0, 1]: dark blue (little weight) to yellow (the most)."""
    indices = np.round(255 * np.clip(levels, 0, 1)).astype(np.uint8).reshape(-1, 1)
    return cv2.cvtColor(cv2.applyColorMap(indices, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB).reshape(-1, 3)


def draw_hand_weights(image: np.ndarray, hand, weights: np.ndarray | None) -> np.ndarray:
    """The hand skeleton with each joint a disc coloured and sized by its weight (viridis, relative to the
    heaviest joint), and a colour bar naming the heaviest joint's share; "no hand found" without a hand.

    weights: (21,) non-negative per keypoint, e.g. KeypointAttribution's shares of the decision.
    """
    if hand is None or weights is None or not np.any(weights):
        return draw_hand(image, hand)
    canvas = np.ascontiguousarray(image.copy())
    unit = max(1, round(max(image.shape[:2]) / 150))
    points = np.round(hand.landmarks[:, :2]).astype(int)
    for a, b in HAND_CONNECTIONS:
        cv2.line(canvas, tuple(points[a]), tuple(points[b]), (255, 255, 255), unit, cv2.LINE_AA)
    levels = np.asarray(weights, np.float64) / np.max(weights)
    colours = _weight_colours(levels)
    for k in np.argsort(levels):  # the heaviest joints drawn last, on top
        radius = round(unit * (1.5 + 3.5 * levels[k]))
        cv2.circle(canvas, tuple(points[k]), radius + 1, (255, 255, 255), -1, cv2.LINE_AA)  # outline
        cv2.circle(canvas, tuple(points[k]), radius, tuple(int(c) for c in colours[k]), -1, cv2.LINE_AA)
    # The colour bar, bottom left on a dark strip: 0 to the heaviest joint's share of the decision.
    height, width = image.shape[:2]
    scale = 0.35 * unit
    text = f"joint weight 0 - {np.max(weights) / np.sum(weights):.0%}"
    (text_width, text_height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    bar_width, bar_height, margin = min(width // 3, 60 * unit), 4 * unit, 3 * unit
    top = height - margin - bar_height - text_height - 2 * margin
    strip = canvas[max(0, top - margin):height, 0:min(width, margin * 3 + max(bar_width, text_width))]
    strip[:] = (0.45 * strip).astype(np.uint8)
    cv2.putText(canvas, text, (margin, top + text_height), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    ramp = _weight_colours(np.linspace(0, 1, bar_width))
    canvas[height - margin - bar_height:height - margin, margin:margin + bar_width] = ramp[None, :, :]
    return canvas


def explanation(image: np.ndarray, heatmap: np.ndarray | None, hand, uses_hands: bool, alpha: float,
                keypoint_weights: np.ndarray | None = None):
    """Side by side: the Grad-CAM overlay (if the model has a backbone) and the skeleton (if it uses hands),
    its joints coloured by keypoint_weights when the model is explained by them."""
    panels = []
    if heatmap is not None:
        panels.append(overlay(image, heatmap, alpha))
    if uses_hands:
        panels.append(draw_hand(image, hand) if keypoint_weights is None
                      else draw_hand_weights(image, hand, keypoint_weights))
    return np.hstack(panels) if panels else image
