"""`ptm show conv`: section 8.2's convolution experiments rendered to PNG."""

from __future__ import annotations

from pathlib import Path

import typer

from ptm_func.text import printable

from .errors import UsageError, friendly_errors
from .options import DataSource, note, whole_first_paragraph

show_app = typer.Typer(
    help="Render the chapter's illustrations to PNG.\n\nExample: ptm show conv bird.jpg", no_args_is_help=True
)


def conv(
    image: Path | None = typer.Argument(None, help="An image file (any size: fitted to 32x32)."),
    index: int | None = typer.Option(None, "--index", help="Use training image N of the dataset instead."),
    data: str | None = DataSource,
    seed: int = typer.Option(0, help="Seed of the random conv's weights."),
    out: Path = typer.Option(Path("runs/conv.png"), "--out", help="PNG to write."),
):
    """Section 8.2's convolutions on one image, as a PNG.

    The input (the mean of its channels) once, then a random 3x3 conv without and with padding,
    the blur and vertical-edge kernels, and 2x2 max-pooling; the title names the image.

    Example: ptm show conv --index 0 --data bundled --out conv.png
    """
    from ptm_func.data.dataset import normalize
    from ptm_func.data.sources import load_dataset
    from ptm_func.files.atomic import check_writable
    from ptm_func.reports.conv_demo import conv_experiments, conv_title
    from ptm_func.reports.plot import PlotUnavailable, image_grid
    from ptm_func.reports.predict import load_for_prediction

    with friendly_errors():
        if (image is None) == (index is None):
            raise UsageError("give an IMAGE or --index N (not both)")
        if out.suffix != ".png":
            raise UsageError(f"--out must name a .png file, got {out}")
        check_writable(out, 1 << 20)
        if image is not None:
            if not image.is_file():
                raise FileNotFoundError(f"no image at {image}")
            fitted, fitting = load_for_prediction(image)
            x = normalize(fitted.unsqueeze(0))[0]
            which = image.name + (f", {fitting}" if fitting else "")
        else:
            dataset = load_dataset(data, notify=note)
            train = dataset.train
            if index is None or not 0 <= index < len(train):  # None: refused above
                raise UsageError(f"--index must be in 0..{len(train) - 1}, got {index}")
            x = train.images[index]
            label = dataset.classes[int(train.labels[index])]
            which = f"training image {index} ({label}) of {dataset.source}"
        try:
            path = image_grid(conv_experiments(x, seed), out, title=conv_title(printable(which)))
        except PlotUnavailable as err:
            raise RuntimeError(str(err)) from None
    typer.echo(f"wrote {path}")


show_app.command("conv", short_help=whole_first_paragraph(conv))(conv)
