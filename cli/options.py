"""Options shared by several commands."""

from __future__ import annotations

import typer

from ptm_func.catalog import MODEL_NAMES, TRACKERS

MODEL_HELP = f"Model name: {', '.join(MODEL_NAMES)}."

NChans1 = typer.Option(None, "--n-chans1", help="Channels of the first conv (book: 32; net is fixed at 16).")
NClasses = typer.Option(
    None, "--n-classes", help="Outputs of fc2, one per class (book: 2; 10 for all of CIFAR-10)."
)
NBlocks = typer.Option(None, "--n-blocks", help="resdeep: number of residual blocks (book: 100).")
Tied = typer.Option(
    None,
    "--tied/--untied",
    help="resdeep: --tied reproduces the book's one shared block; default --untied (dlwpt-code #89).",
)


YOUR_MODEL = (
    "or your own: FILE.py:ATTR or package.module:ATTR (an nn.Module class, or a function that returns "
    "one or a ptm Model), or a name an installed package adds"
)
ModelArgs = typer.Option(
    None,
    "--model-arg",
    help="KEY=VALUE for your own model's class or factory, repeatable. VALUE is a Python literal "
    "(5, 0.5, True, None, (5, 5)) or else a string; recorded in the checkpoint. "
    "E.g. --model-arg kernel=(5,5)",
)
ModelRef = typer.Option(
    None,
    "--model",
    help="A checkpoint of your own model needs its reference given again (FILE.py:ATTR or "
    "package.module:ATTR, as trained): ptm never imports code that a checkpoint names.",
)


def use_model_ref(ref: str | None) -> None:
    """Import and register the model --model names (nothing for None)."""
    if ref is not None:
        from ptm_func.nets.references import use_model

        use_model(ref)


# what --model-arg may not name: ptm's own settings; where a command has an option for one, its name
OWN_OPTIONS = {
    "n_chans1": "--n-chans1", "n_blocks": "--n-blocks", "tied": "--tied/--untied",
    "n_classes": "--classes, one output per class", "l2_lambda": "--l2", "l1_lambda": "--l1",
    "l2": "--l2", "l1": "--l1", "members_vmap": "--vmap", "channels_last": "--channels-last",
    "eval_train_mode": "--book-quirks", "shuffle": "--book-quirks", "json": "--json", "nproc": "--nproc",
    "model": "--model",
}  # fmt: skip
RUN_ARGUMENTS = ("data", "classes", "device", "out", "force", "resume", "checkpoint_every", "replicas",
                 "book_quirks", "reporter", "world", "stop_on_signals", "track", "grid", "seeds", "seed",
                 "chunk", "name", "variant", "epochs", "batch_size", "lr", "momentum", "weight_decay",
                 "eval_every", "compile", "augment")  # fmt: skip


def model_args(pairs: list[str] | None) -> dict:
    """--model-arg KEY=VALUE pairs as keyword arguments; a KEY that is one of ptm's own settings
    (a TrainConfig field, a run argument, an option) is refused."""
    from dataclasses import fields

    from ptm_func.errors import ModelReferenceError
    from ptm_func.nets.references import parse_model_args
    from ptm_func.training.config import TrainConfig

    args = parse_model_args(pairs)
    own: dict[str, str | None] = {f.name: None for f in fields(TrainConfig)}  # no option of its own
    own.update({name: "--" + name.replace("_", "-") for name in RUN_ARGUMENTS}, **OWN_OPTIONS)
    for key in args:
        if key in own:
            option = f" (where the command has it: {own[key]})" if own[key] else ""
            raise ModelReferenceError(
                f"--model-arg {key}: that is ptm's own setting, not the model's{option}"
            )
    return args


ChannelsLast = typer.Option(
    None,
    "--channels-last/--no-channels-last",
    help="Train on channels-last images (default: on CPU, for every model that runs on them: the same "
    "logits up to rounding; a forward that `.view`s its features needs NCHW and gets it, with a note).",
)


DataSource = typer.Option(
    None,
    "--data",
    "--data-dir",
    help="Where the images come from. auto (default): CIFAR-10 from $PTM_DATA_DIR (default "
    "~/.cache/ptm_func), else downloaded there, else, offline, the CIFAR-2 bundled with ptm; "
    "bundled: that CIFAR-2 (airplane, bird; JPEG re-encodings); cifar10: CIFAR-10's original pixels "
    "(downloaded if missing); or a folder: an ImageFolder root (train/<class>/*.jpg and test/ or val/) "
    "or one holding cifar-10-batches-py.",
)
Classes = typer.Option(
    None,
    "--classes",
    help="Two or more comma-separated classes, in label order, or 'all' (CIFAR-10's ten, or every class "
    "folder); the net gets one output per class. Default: airplane,bird (the book's) for CIFAR; every "
    "class folder of a folder. E.g. cat,dog,horse",
)
Device = typer.Option("auto", "--device", help="auto (cuda when present), cpu or cuda.")
Track = typer.Option(
    None,
    "--track",
    help=f"Mirror the record into trackers, comma-separated: {', '.join(TRACKERS)} (extras: pip install "
    "'ptm_func[tensorboard,mlflow]'). TensorBoard: events in NAME.tb beside each checkpoint; MLflow: a run "
    "at $MLFLOW_TRACKING_URI, else MLflow's default (./mlflow.db), sweeps as nested runs.",
)
Augment = typer.Option(
    None,
    "--augment",
    help="Augment the training images inside the step, on the device: flip (mirror left-right, "
    "p=1/2), crop (a random 32x32 window of the image reflect-padded by 4), or flip,crop. Off by default, "
    "as in the book. Each image's draw is keyed by (seed, step, position in the batch): resumes bit for "
    "bit, and --nproc sees the same images. Recorded in the checkpoint. E.g. flip,crop",
)


def whole_first_paragraph(command) -> str:
    """A command's summary (its docstring's first paragraph) for the command list of --help,
    which would otherwise cut it at about 65 characters, mid-sentence."""
    return " ".join((command.__doc__ or "").strip().split("\n\n")[0].split())


def parse_classes(classes: str | None) -> list[str] | None:
    return [c.strip() for c in classes.split(",") if c.strip()] if classes else None


def parse_augment(augment: str | None) -> tuple[str, ...] | None:
    """`--augment flip,crop` as names (None: not given); `none` or an empty value: no augmentation."""
    if augment is None:
        return None
    names = tuple(a.strip() for a in augment.split(",") if a.strip())
    return () if names == ("none",) else names


def note(message: str) -> None:
    """One line on stderr for something the user should know (not an error)."""
    typer.echo(f"ptm: note: {message}", err=True)


def build_model(
    name: str,
    n_chans1: int | None,
    n_blocks: int | None,
    tied: bool | None,
    n_classes: int | None = None,
    **options,
):
    """Look up `name` with only the options the user actually gave."""
    from ptm_func.nets.registry import get_model

    given = optional(n_chans1=n_chans1, n_blocks=n_blocks, tied=tied, n_classes=n_classes)
    return get_model(name, **given, **options)


def optional(**given):
    """The options the user gave (None: not given, the library's default applies)."""
    return {k: v for k, v in given.items() if v is not None}


def as_json_option(help: str):
    return typer.Option(False, "--json", help=help)
