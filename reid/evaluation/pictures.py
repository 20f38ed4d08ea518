"""Pictures of a ranking: a query, then its matches in a row, each framed in a colour that says
what it is, with a label above and, optionally, its file name below. demo.py draws the
protocol's view of a test query; search.py the answer to a search of one's own images. And why
two images match: each image under its similarity map (similarity_maps.py)."""
import os

import matplotlib
import numpy as np

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
    draw_rankings(path, [tiles], title, names, dpi)


def draw_rankings(path, rows, title, names=False, dpi=120, row_labels=None):
    """draw_ranking with several rows of tiles, one under the other (rankings of one query by two
    runs, say), each with its label from `row_labels` written up its left side."""
    width = max(len(tiles) for tiles in rows)
    fig, axes = plt.subplots(len(rows), width, figsize=(TILE_WIDTH * width, HEIGHT * len(rows)), squeeze=False)
    for k, (row, tiles) in enumerate(zip(axes, rows)):
        if row_labels:
            row[0].set_ylabel(row_labels[k], fontsize=7)
        for ax in row[len(tiles):]:
            ax.axis("off")
        for ax, (image, label, colour) in zip(row, tiles):
            in_memory = isinstance(image, Image.Image)
            ax.imshow(image if in_memory else load_image(image))
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(4)
            ax.set_title(label, fontsize=7, color=colour)
            if names:
                ax.set_xlabel((image.info.get("name", "") if in_memory else os.path.basename(image))[-18:],
                              fontsize=5)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def map_limit(maps):
    """The largest share of any of the similarity maps, +-: one colour scale for them all."""
    return max(float(np.abs(np.asarray(m)).max()) for m in maps) or 1.0


def draw_similarity(path, images, maps, labels, title, dpi=120):
    """Write a PNG of two images, each beside itself under its similarity map (similarity_maps:
    the share of the cosine each place contributes; red adds, blue takes away, on one scale for
    both), each cell's share written on it where the map has 32 cells or fewer."""
    limit = map_limit(maps)
    fig, axes = plt.subplots(1, 4, figsize=(TILE_WIDTH * 4, HEIGHT), squeeze=False)
    for k, (image, share, label) in enumerate(zip(images, maps, labels)):
        share = np.asarray(share, dtype=np.float64)
        shown = image if isinstance(image, Image.Image) else load_image(image)
        plain, mapped = axes[0][2 * k], axes[0][2 * k + 1]
        plain.imshow(shown)
        plain.set_title(label, fontsize=7)
        mapped.imshow(shown)
        height, width = share.shape
        # the map's cells cover the image evenly, as the feature map's positions do
        mapped.imshow(share, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.55, interpolation="nearest",
                      extent=(0, shown.width, shown.height, 0))
        if share.size <= 32:
            for (row, col), value in zip([(r, c) for r in range(height) for c in range(width)], share.flatten()):
                mapped.text((col + 0.5) * shown.width / width, (row + 0.5) * shown.height / height, f"{value:+.2f}",
                            ha="center", va="center", fontsize=6)
        mapped.set_title(f"sums to {float(share.sum()):.3f}", fontsize=7)
        for ax in (plain, mapped):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def overlay(image, share, limit):
    """`image` (PIL) under its similarity map `share` (h x w, its cells covering the image evenly):
    red where a place adds to the cosine, blue where it takes away, full colour at +-limit."""
    colours = matplotlib.colormaps["RdBu_r"]((np.asarray(share, np.float64) / limit + 1) / 2)[..., :3]
    cells = Image.fromarray((colours * 255).round().astype(np.uint8))
    return Image.blend(image.convert("RGB"), cells.resize(image.size, Image.Resampling.NEAREST), 0.55)


def draw_why(path, pairs, title, dpi=110):
    """Write a PNG of why each pair matches: a column per pair, (query image, its map, match image,
    its map, label), the query over its map above the match over its; one colour scale for all."""
    limit = map_limit([m for _, mq, _, mm, _ in pairs for m in (mq, mm)])
    fig, axes = plt.subplots(2, len(pairs), figsize=(TILE_WIDTH * len(pairs), 2 * HEIGHT), squeeze=False)
    for k, (query, map_q, match, map_m, label) in enumerate(pairs):
        for row, (image, share) in enumerate(((query, map_q), (match, map_m))):
            ax = axes[row][k]
            ax.imshow(overlay(image, share, limit))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"sums to {float(np.sum(share)):.3f}", fontsize=6)
        axes[0][k].set_title(label, fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
