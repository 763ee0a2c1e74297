"""int8 ONNX: ONNX Runtime static quantization (QDQ) of an fp32 export, calibrated on given inputs.

`onnxruntime.quantization.quantize_static` does the work: the model is first prepared by
`quant_pre_process` (shape inference, graph optimisation, as ONNX Runtime recommends), then calibrated
on the inputs (MinMax by default; Entropy and Percentile on request) and written in the QDQ format:
QuantizeLinear/DequantizeLinear pairs around every tensor of a quantizable op, which ONNX Runtime fuses
into int8 kernels (QLinearConv and friends) when it loads the model. Weights are int8, per output
channel; activations uint8 (the U8S8 pairing ONNX Runtime's x86 and ARM kernels are fastest with).

Before quantizing, HardSigmoid and HardSwish (MobileNetV3's activations and squeeze-excite gates) are
rewritten as the Mul/Add/Clip they are: ONNX Runtime has no int8 kernel for either, so left as they are
each runs dequantize -> fp32 -> quantize, and MobileNetV3 models came out slower in int8 than in fp32;
Mul and Add get QLinearMul/QLinearAdd and the Clip folds into the quantization range.

Kept in fp32: only the nodes named in `exclude` (the caller's choice; there is no automatic
sensitivity pass). An op ONNX Runtime cannot quantize stays fp32 silently in `quantize_static`; here the
result is inspected, every compute op (Conv, Gemm, MatMul, ...) left in fp32 is reported, and a model in
which none was quantized is an error rather than a "quantized" file that is not.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import onnx

from nascli.errors import CheckFailed, UsageError
from nascli.export.onnx import INPUT_NAME

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "minmax"
FORMAT = "QDQ"
WEIGHT_TYPE, ACTIVATION_TYPE = "int8", "uint8"
# The ops whose int8 kernels carry the speed-up; one left in fp32 is worth reporting.
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class QuantizeResult:
    data: bytes  # the serialized int8 (QDQ) model
    settings: dict[str, Any]  # what was done: format, method, types, per-channel, excluded nodes
    quantized_ops: int  # compute ops with int8 weights
    fp32_ops: list[str] = field(default_factory=list)  # compute ops left in fp32 ("name (OpType)")


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of NCHW float32 arrays."""

    def __init__(self, inputs: Sequence[np.ndarray | dict[str, np.ndarray]]):
        self._it = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        if x is None:
            return None
        if isinstance(x, dict):  # a model with several (named) inputs
            return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in x.items()}
        return {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)}


def settings(method: str, per_channel: bool, exclude: Iterable[str]) -> dict[str, Any]:
    return {"tool": "onnxruntime.quantization.quantize_static", "format": FORMAT, "calibration_method": method,
            "per_channel": per_channel, "weight_type": WEIGHT_TYPE, "activation_type": ACTIVATION_TYPE,
            "reduce_range": False, "nodes_kept_fp32": sorted(exclude),
            "fp32_choice": "only nodes the user names (--int8-keep-fp32); no automatic sensitivity pass"}


def quantize(fp32: bytes, inputs: Sequence[np.ndarray | dict[str, np.ndarray]], *, method: str = DEFAULT_METHOD, per_channel: bool = True,
             exclude: Iterable[str] = ()) -> QuantizeResult:
    """The int8 QDQ model of the fp32 ONNX model `fp32`, calibrated on `inputs` (each 1x3xHxW float32, or
    {input name: array} for a model with other inputs).

    CheckFailed if onnxruntime's quantizer fails or quantizes no compute op (no int8 kernel for any).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise UsageError(f"calibration method {method!r} is not known", hint=f"use one of {', '.join(METHODS)}")
    if not inputs:
        raise UsageError("no calibration inputs", hint="give at least one calibration image")
    exclude = list(exclude)
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]
    model = onnx.load_from_string(fp32)
    rewritten = hard_activations_as_elementwise(model)
    with tempfile.TemporaryDirectory(prefix="nascli-int8-") as tmp:
        src, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model.SerializeToString() if rewritten else fp32)
        try:
            quant_pre_process(str(src), str(pre))
        except Exception as e:  # pre-processing is an optimisation: quantize the plain export instead
            log.warning("quant_pre_process failed (%s); quantizing the export as it is", _first_line(e))
            pre = src
        # names as the quantizer sees them: after pre-processing, which may fuse nodes away
        names = {n.name for n in onnx.load(str(pre)).graph.node}
        unknown = [e for e in exclude if e not in names]
        if unknown:
            raise UsageError(f"--int8-keep-fp32: no node named {unknown[0]!r} in the model",
                             hint="use a name export.json lists under int8.fp32_ops or the int8 model's graph "
                                  "holds (e.g. /head/conv/Conv)")
        try:
            quantize_static(str(pre), str(out), _Reader(inputs), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calib, nodes_to_exclude=exclude or None,
                            calibration_cache_path=None)
        except Exception as e:  # the quantizer raises bare Exceptions, ValueErrors, onnx errors...
            raise CheckFailed(f"onnxruntime could not quantize the model ({_first_line(e)})",
                              hint="export without --int8, or keep the failing node in fp32 with "
                                   "--int8-keep-fp32 NODE") from None
        data = out.read_bytes()
    quantized, fp32_ops = _inspect(onnx.load_from_string(data))
    if quantized == 0:
        kinds = sorted({op.split(" (")[-1].rstrip(")") for op in fp32_ops}) or ["none"]
        raise CheckFailed(f"no operator of the model got an int8 kernel (compute ops: {', '.join(kinds)})",
                          hint="ONNX Runtime quantizes Conv, Gemm and MatMul; export this model without --int8")
    if fp32_ops:
        log.info("int8: %d compute ops quantized, %d kept in fp32: %s", quantized, len(fp32_ops), ", ".join(fp32_ops))
    done = {**settings(method, per_channel, exclude), "hard_activations_rewritten": rewritten}
    return QuantizeResult(data, done, quantized, fp32_ops)


def hard_activations_as_elementwise(model: onnx.ModelProto) -> int:
    """Rewrite every HardSigmoid / HardSwish node of `model` in place as Mul -> Add -> Clip (-> Mul by x).

    HardSigmoid(x) = clip(alpha * x + beta, 0, 1); HardSwish(x) = x * HardSigmoid(x) with alpha 1/6, beta 0.5
    (the ONNX definitions). Returns how many nodes were rewritten. A rewritten node's output name is kept,
    so the graph's consumers and outputs are untouched.
    """
    from onnx import helper, numpy_helper

    graph, nodes, count = model.graph, [], 0
    taken = {n.name for n in graph.node} | {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type not in ("HardSigmoid", "HardSwish"):
            nodes.append(node)
            continue
        attrs = {a.name: a.f for a in node.attribute}
        alpha = attrs.get("alpha", 0.2) if node.op_type == "HardSigmoid" else 1 / 6
        beta = attrs.get("beta", 0.5) if node.op_type == "HardSigmoid" else 0.5
        count += 1
        p = f"nascli_hard{count}"
        while any(name.startswith(p) for name in taken):  # a name the graph already uses
            p += "_"
        for suffix, value in (("alpha", alpha), ("beta", beta), ("lo", 0.0), ("hi", 1.0)):
            graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), f"{p}_{suffix}"))
        gate = node.output[0] if node.op_type == "HardSigmoid" else f"{p}_gate"
        nodes += [helper.make_node("Mul", [node.input[0], f"{p}_alpha"], [f"{p}_scaled"], name=f"{p}/Mul"),
                  helper.make_node("Add", [f"{p}_scaled", f"{p}_beta"], [f"{p}_shifted"], name=f"{p}/Add"),
                  helper.make_node("Clip", [f"{p}_shifted", f"{p}_lo", f"{p}_hi"], [gate], name=f"{p}/Clip")]
        if node.op_type == "HardSwish":
            nodes.append(helper.make_node("Mul", [node.input[0], gate], [node.output[0]], name=f"{p}/MulX"))
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def _inspect(model: onnx.ModelProto) -> tuple[int, list[str]]:
    """(compute ops whose weight comes through DequantizeLinear, the others as "name (OpType)")."""
    producers = {o: n for n in model.graph.node for o in n.output}
    quantized, fp32 = 0, []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS or len(node.input) < 2:
            continue
        src = producers.get(node.input[1])
        if src is not None and src.op_type == "DequantizeLinear":
            quantized += 1
        else:
            fp32.append(f"{node.name} ({node.op_type})")
    return quantized, fp32


def random_inputs(input_size: tuple[int, int], n: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Seeded N(0, 1) calibration inputs: enough to time an int8 model (its speed does not depend on the
    scales), never to judge its accuracy."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 3, *input_size), dtype=np.float32) for _ in range(n)]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
