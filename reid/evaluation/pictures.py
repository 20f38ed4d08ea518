"""Pictures of a ranking: a query, then its matches in a row, each framed in a colour that says
what it is, with a label above and, optionally, its file name below. demo.py draws the
protocol's view of a test query; search.py the answer to a search of one's own images."""
import os

import matplotlib

matplotlib.use("Agg")  # pictures go to files; no screen is needed
import matplotlib.pyplot as plt
from PIL import Image

from reid.data import load_image
from reid.runs import atomic_path

TILE_WIDTH, HEIGHT = 1.35, 3.3  # inches


def draw_ranking(path, tiles, title, names=False, dpi=120):
    """Write a PNG of `tiles`, (image file, label, colour) from left to right, under `title`;
    with names, each image's file name (its last 18 characters) below it. An image may also be a
    PIL image (a frame of footage), named by its info["name"]."""
    fig, axes = plt.subplots(1, len(tiles), figsize=(TILE_WIDTH * len(tiles), HEIGHT), squeeze=False)
    for ax, (image, label, colour) in zip(axes[0], tiles):
        in_memory = isinstance(image, Image.Image)
        ax.imshow(image if in_memory else load_image(image))
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(4)
        ax.set_title(label, fontsize=7, color=colour)
        if names:
            ax.set_xlabel((image.info.get("name", "") if in_memory else os.path.basename(image))[-18:], fontsize=5)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
