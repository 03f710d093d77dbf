"""Export one width of a slimmable model as a network of standard torch layers."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from usrl.nn.width import _CONTROL_ATTR, SlimmableMixin, width


def _replace_slimmable(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, SlimmableMixin):
            setattr(module, name, child.to_static())
        else:
            _replace_slimmable(child)
    module.__dict__.pop(_CONTROL_ATTR, None)


def export_fixed_width(model: nn.Module, width_value: float) -> nn.Module:
    """A copy of ``model`` at width ``width_value`` made of standard torch layers, in eval mode.

    Every slimmable layer is replaced by its ``nn.Conv2d`` / ``nn.Linear`` / ``nn.BatchNorm2d``
    / ``nn.GroupNorm`` counterpart holding copies of the weights used at that width (and, for
    BatchNorm, the statistics calibrated for it: calibrate first). Its output equals the
    slimmable model's at that width in eval mode.

    For use without usrl: ``torch.jit.script`` / ``torch.jit.trace`` it and ``torch.jit.save``
    the result, or ``torch.onnx.export`` it; or save its ``state_dict``: the keys are the
    original model's, the shapes those of the width, so the same architecture built from plain
    torch layers with the channel counts shown by ``print(exported)`` loads it.
    A bare slimmable layer is returned as its static counterpart.
    """
    with width(model, width_value), torch.no_grad():
        if isinstance(model, SlimmableMixin):
            return model.to_static().eval()
        exported = copy.deepcopy(model)
        _replace_slimmable(exported)
    return exported.eval()


EXPORT_FORMATS = (".pt2", ".onnx", ".pt")


def save_exported(
    module: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    dynamic_dims: tuple[int, ...] = (0,),
    input_name: str = "input",
    output_name: str = "output",
) -> None:
    """Write ``module`` (e.g. from :func:`export_fixed_width`) for use without usrl, atomically.

    The format follows the suffix: ``.pt2`` a ``torch.export`` program
    (``torch.export.load(path).module()``), ``.onnx`` ONNX (needs the ``onnx`` and
    ``onnxscript`` packages; ``ImportError`` saying so otherwise), ``.pt`` the module pickled
    whole. ``dynamic_dims`` of the input (default: the batch) stay dynamic in ``.pt2`` and
    ``.onnx``. ``ValueError`` for another suffix.
    """
    from usrl.utils import atomic_write

    path = Path(path)
    if path.suffix not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {path.suffix or '(none)'}; use one of {', '.join(EXPORT_FORMATS)}")
    names = {0: "batch", 2: "height", 3: "width"}
    dims = {d: torch.export.Dim(names.get(d, f"dim{d}"), min=1 if d == 0 else 2) for d in dynamic_dims}
    module = module.eval()
    if path.suffix == ".pt2":
        program = torch.export.export(module, (example,), dynamic_shapes=(dims,))
        atomic_write(path, lambda tmp: torch.export.save(program, tmp), suffix=".pt2")
    elif path.suffix == ".onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise ImportError(
                "an .onnx export needs the onnx and onnxscript packages (pip install onnx onnxscript)"
            ) from None

        def write_onnx(tmp: Path) -> None:
            torch.onnx.export(module, (example,), str(tmp), input_names=[input_name], output_names=[output_name],
                              dynamic_shapes=(dims,), dynamo=True, verbose=False)  # fmt: skip

        atomic_write(path, write_onnx, suffix=".onnx")
    else:
        atomic_write(path, lambda tmp: torch.save(module, tmp), suffix=".pt")
