"""How each JAX primitive of the exported colorize function becomes ONNX nodes (onnx_export.py).

Graph collects the nodes and initializers; the translators below emit, for one jaxpr equation whose
operands are already ONNX values, the nodes computing its outputs. Shapes may hold symbolic
dimensions (jax.export), which Graph.shape_of builds at run time from the input's Shape.
"""

from typing import Any, Sequence

import jax
import numpy as np
import onnx
from onnx import helper
from onnx import numpy_helper

_TO_ONNX_TYPE = {
  np.dtype(np.float32): onnx.TensorProto.FLOAT,
  np.dtype(np.int32): onnx.TensorProto.INT32,
  np.dtype(np.int64): onnx.TensorProto.INT64,
  np.dtype(np.uint8): onnx.TensorProto.UINT8,
  np.dtype(np.bool_): onnx.TensorProto.BOOL,
}
_ELEMENTWISE = {
  "add": "Add",
  "sub": "Sub",
  "mul": "Mul",
  "div": "Div",
  "max": "Max",
  "min": "Min",
  "pow": "Pow",
  "abs": "Abs",
  "sign": "Sign",
  "tanh": "Tanh",
  "exp": "Exp",
  "log": "Log",
  "sqrt": "Sqrt",
  "neg": "Neg",
  "floor": "Floor",
  "ceil": "Ceil",
  "eq": "Equal",
  "gt": "Greater",
  "ge": "GreaterOrEqual",
  "lt": "Less",
  "le": "LessOrEqual",
  "logistic": "Sigmoid",
}
_REDUCTIONS = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin"}


class UnsupportedError(NotImplementedError):
  """A primitive or shape the translator does not handle."""


class Graph:
  """ONNX nodes and initializers under construction, and the tensors of the symbolic dimensions."""

  def __init__(self, opset: int):
    self.opset = opset
    self.nodes, self.initializers = [], []
    self.dims = {}  # symbolic dimension name -> ONNX int64 [1] tensor
    self._count = 0

  def name(self, hint: str) -> str:
    self._count += 1
    return f"{hint}_{self._count}"

  def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs) -> Any:
    names = [self.name(op_type.lower()) for _ in range(outputs)]
    self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
    return names[0] if outputs == 1 else names

  def const(self, value, dtype=None) -> str:
    name = self.name("const")
    self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
    return name

  def shape_of(self, shape: Sequence[Any]) -> str:
    """An int64 [rank] tensor holding `shape`, whose entries are ints or symbolic dimensions."""
    if all(isinstance(d, int) for d in shape):
      return self.const(np.array(shape, np.int64))
    pieces = []
    for d in shape:
      if isinstance(d, int):
        pieces.append(self.const(np.array([d], np.int64)))
      elif str(d) in self.dims:
        pieces.append(self.dims[str(d)])
      else:
        raise UnsupportedError(f"a shape with the dimension expression {d}")
    return self.op("Concat", pieces, axis=0)


def is_static(shape) -> bool:
  return all(isinstance(d, int) for d in shape)


def onnx_type(dtype) -> int:
  try:
    return _TO_ONNX_TYPE[np.dtype(dtype)]
  except KeyError:
    raise UnsupportedError(f"dtype {dtype}") from None


def _dim_as_value(g: Graph, eqn, names: list[str]):
  del names
  scalar = g.op("Squeeze", [g.shape_of([eqn.params["dim"]])])
  return g.op("Cast", [scalar], to=onnx_type(eqn.outvars[0].aval.dtype))


def _convert_element_type(g: Graph, eqn, names: list[str]):
  return g.op("Cast", names, to=onnx_type(eqn.params["new_dtype"]))


def _stop_gradient(g: Graph, eqn, names: list[str]):
  """No gradients in an inference graph: the value itself (softmax's max shift uses it)."""
  del eqn
  return g.op("Identity", names)


def _ne(g: Graph, eqn, names: list[str]):
  del eqn
  return g.op("Not", [g.op("Equal", names)])


def _and(g: Graph, eqn, names: list[str]):
  bitwise = eqn.outvars[0].aval.dtype != np.bool_
  return g.op("BitwiseAnd" if bitwise else "And", names)


def _or(g: Graph, eqn, names: list[str]):
  bitwise = eqn.outvars[0].aval.dtype != np.bool_
  return g.op("BitwiseOr" if bitwise else "Or", names)


def _not(g: Graph, eqn, names: list[str]):
  bitwise = eqn.outvars[0].aval.dtype != np.bool_
  return g.op("BitwiseNot" if bitwise else "Not", names)


def _rem(g: Graph, eqn, names: list[str]):
  del eqn
  return g.op("Mod", names, fmod=1)  # lax.rem: the sign of the dividend, as C's fmod


def _integer_pow(g: Graph, eqn, names: list[str]):
  y = eqn.params["y"]
  if y < 1:
    raise UnsupportedError(f"integer_pow with exponent {y}")
  out = names[0]
  for _ in range(y - 1):
    out = g.op("Mul", [out, names[0]])
  return out


def _cbrt(g: Graph, eqn, names: list[str]):
  del eqn
  x = names[0]
  third = g.const(np.array(1 / 3, np.float32))
  magnitude = g.op("Pow", [g.op("Abs", [x]), third])
  return g.op("Mul", [g.op("Sign", [x]), magnitude])


def _rsqrt(g: Graph, eqn, names: list[str]):
  del eqn
  return g.op("Reciprocal", [g.op("Sqrt", names)])


def _round(g: Graph, eqn, names: list[str]):
  if eqn.params["rounding_method"] != jax.lax.RoundingMethod.TO_NEAREST_EVEN:
    raise UnsupportedError("round away from zero")
  return g.op("Round", names)  # ONNX rounds half to even


def _select_n(g: Graph, eqn, names: list[str]):
  if len(names) != 3 or eqn.invars[0].aval.dtype != np.bool_:
    raise UnsupportedError("select_n with other than a boolean predicate and two cases")
  return g.op("Where", [names[0], names[2], names[1]])


def _clamp(g: Graph, eqn, names: list[str]):
  del eqn
  low, x, high = names
  return g.op("Min", [g.op("Max", [x, low]), high])


def _broadcast_in_dim(g: Graph, eqn, names: list[str]):
  shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
  operand_shape = eqn.invars[0].aval.shape
  expanded = [1] * len(shape)
  for i, d in enumerate(dims):
    expanded[d] = operand_shape[i]
  x = g.op("Reshape", [names[0], g.shape_of(expanded)])
  return g.op("Expand", [x, g.shape_of(shape)])


def _reshape(g: Graph, eqn, names: list[str]):
  if eqn.params.get("dimensions"):
    raise UnsupportedError("reshape with dimensions")
  return g.op("Reshape", [names[0], g.shape_of(eqn.params["new_sizes"])])


def _squeeze(g: Graph, eqn, names: list[str]):
  axes = g.const(np.array(eqn.params["dimensions"], np.int64))
  return g.op("Squeeze", [names[0], axes])


def _expand_dims(g: Graph, eqn, names: list[str]):
  axes = g.const(np.array(eqn.params["dimensions"], np.int64))
  return g.op("Unsqueeze", [names[0], axes])


def _transpose(g: Graph, eqn, names: list[str]):
  return g.op("Transpose", names, perm=list(eqn.params["permutation"]))


def _concatenate(g: Graph, eqn, names: list[str]):
  return g.op("Concat", names, axis=eqn.params["dimension"])


def _stack(g: Graph, eqn, names: list[str]):
  axes = g.const(np.array([eqn.params["axis"]], np.int64))
  return g.op("Concat", [g.op("Unsqueeze", [n, axes]) for n in names], axis=eqn.params["axis"])


def _unstack(g: Graph, eqn, names: list[str]):
  axis = eqn.params["axis"]
  parts = g.op("Split", names, outputs=len(eqn.outvars), axis=axis, num_outputs=len(eqn.outvars))
  parts = parts if isinstance(parts, list) else [parts]
  axes = g.const(np.array([axis], np.int64))
  return [g.op("Squeeze", [p, axes]) for p in parts]


def _iota(g: Graph, eqn, names: list[str]):
  del names
  shape, dimension = eqn.params["shape"], eqn.params["dimension"]
  dtype = eqn.params["dtype"]
  limit = g.op("Squeeze", [g.shape_of([shape[dimension]])])
  values = g.op("Range", [g.const(np.array(0, np.int64)), limit, g.const(np.array(1, np.int64))])
  values = g.op("Cast", [values], to=onnx_type(dtype))
  if len(shape) == 1:
    return values
  expanded = [1] * len(shape)
  expanded[dimension] = shape[dimension]
  values = g.op("Reshape", [values, g.shape_of(expanded)])
  return g.op("Expand", [values, g.shape_of(shape)])


def _slice(g: Graph, eqn, names: list[str]):
  starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
  strides = eqn.params["strides"] or (1,) * len(starts)
  if not (is_static(starts) and is_static(limits)):
    raise UnsupportedError("a slice with symbolic bounds")
  return g.op(
    "Slice",
    [
      names[0],
      g.const(np.array(starts, np.int64)),
      g.const(np.array(limits, np.int64)),
      g.const(np.arange(len(starts), dtype=np.int64)),
      g.const(np.array(strides, np.int64)),
    ],
  )


def _pad(g: Graph, eqn, names: list[str]):
  config = eqn.params["padding_config"]
  if any(interior for _, _, interior in config) or any(lo < 0 or hi < 0 for lo, hi, _ in config):
    raise UnsupportedError("pad with interior or negative padding")
  pads = [lo for lo, _, _ in config] + [hi for _, hi, _ in config]
  return g.op("Pad", [names[0], g.const(np.array(pads, np.int64)), names[1]], mode="constant")


def _dot_general(g: Graph, eqn, names: list[str]):
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
  if not lb and lc == (lhs.ndim - 1,) and rc == (0,) and rhs.ndim == 2:
    out = g.op("MatMul", names)  # [..., k] @ [k, n]
  else:
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lhs_letters = [next(letters) for _ in range(lhs.ndim)]
    rhs_letters = [next(letters) for _ in range(rhs.ndim)]
    for l, r in zip(list(lc) + list(lb), list(rc) + list(rb)):
      rhs_letters[r] = lhs_letters[l]
    out_letters = (
      [lhs_letters[i] for i in lb]
      + [lhs_letters[i] for i in range(lhs.ndim) if i not in lc and i not in lb]
      + [rhs_letters[i] for i in range(rhs.ndim) if i not in rc and i not in rb]
    )
    equation = f"{''.join(lhs_letters)},{''.join(rhs_letters)}->{''.join(out_letters)}"
    out = g.op("Einsum", names, equation=equation)
  wanted = eqn.params.get("preferred_element_type") or eqn.outvars[0].aval.dtype
  if np.dtype(wanted) != np.dtype(lhs.dtype):
    out = g.op("Cast", [out], to=onnx_type(wanted))
  return out


def _reduce_window_max(g: Graph, eqn, names: list[str]):
  """Max pooling: the pooled axes (window, stride or padding not 1, 1, 0) go last, as MaxPool's."""
  p = eqn.params
  if any(d != 1 for d in tuple(p["base_dilation"]) + tuple(p["window_dilation"])):
    raise UnsupportedError("reduce_window_max with dilation")
  windows = zip(p["window_dimensions"], p["window_strides"], p["padding"])
  pooled = [i for i, (w, s, pad) in enumerate(windows) if (w, s, tuple(pad)) != (1, 1, (0, 0))]
  kept = [i for i in range(len(p["window_dimensions"])) if i not in pooled]
  if len(kept) != 2:
    raise UnsupportedError("reduce_window_max that pools other than the spatial axes")
  perm = kept + pooled
  x = g.op("Transpose", names, perm=perm)
  y = g.op(
    "MaxPool",
    [x],
    kernel_shape=[p["window_dimensions"][i] for i in pooled],
    strides=[p["window_strides"][i] for i in pooled],
    pads=[p["padding"][i][0] for i in pooled] + [p["padding"][i][1] for i in pooled],
  )
  return g.op("Transpose", [y], perm=list(np.argsort(perm)))


def conv_general_dilated(g: Graph, eqn, x: str, kernel: np.ndarray | None) -> str:
  """A convolution of x (named) by a constant kernel (None: not a constant), which becomes an
  initializer in ONNX's layout: O, I, spatial..., flipped for a transposed convolution."""
  p = eqn.params
  if p["batch_group_count"] != 1:
    raise UnsupportedError("a convolution with batch_group_count > 1")
  if kernel is None:
    raise UnsupportedError("a convolution whose kernel is not a constant")
  numbers = p["dimension_numbers"]
  lhs_spec, rhs_spec, out_spec = numbers.lhs_spec, numbers.rhs_spec, numbers.out_spec
  x = g.op("Transpose", [x], perm=list(lhs_spec))  # -> N, C, spatial...
  kernel = np.transpose(kernel, rhs_spec)  # -> O, I, spatial...
  spatial = kernel.shape[2:]
  pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
  if any(d != 1 for d in p["lhs_dilation"]):
    # A transposed convolution: conv(dilate(x), k) = ConvTranspose(x, flipped k, swapped I/O).
    if p["feature_group_count"] != 1 or any(d != 1 for d in p["rhs_dilation"]):
      raise UnsupportedError("a transposed convolution with groups or kernel dilation")
    if any(d != 1 for d in p["window_strides"]):
      raise UnsupportedError("a convolution with both lhs dilation and strides")
    k = list(spatial)
    pads = [k[i % len(k)] - 1 - pad for i, pad in enumerate(pads)]
    if any(pad < 0 for pad in pads):
      raise UnsupportedError("a transposed convolution with padding beyond the kernel")
    flipped = kernel[(slice(None), slice(None)) + (slice(None, None, -1),) * len(k)]
    y = g.op(
      "ConvTranspose",
      [x, g.const(np.swapaxes(flipped, 0, 1).copy())],
      strides=list(p["lhs_dilation"]),
      pads=pads,
      kernel_shape=k,
    )
  else:
    if any(pad < 0 for pad in pads):
      raise UnsupportedError("a convolution with negative padding")
    y = g.op(
      "Conv",
      [x, g.const(np.ascontiguousarray(kernel))],
      strides=list(p["window_strides"]),
      pads=pads,
      dilations=list(p["rhs_dilation"]),
      group=p["feature_group_count"],
      kernel_shape=list(spatial),
    )
  return g.op("Transpose", [y], perm=list(np.argsort(out_spec)))


_TRANSLATORS = {
  "dim_as_value": _dim_as_value,
  "convert_element_type": _convert_element_type,
  "stop_gradient": _stop_gradient,
  "ne": _ne,
  "and": _and,
  "or": _or,
  "not": _not,
  "rem": _rem,
  "integer_pow": _integer_pow,
  "cbrt": _cbrt,
  "rsqrt": _rsqrt,
  "round": _round,
  "select_n": _select_n,
  "clamp": _clamp,
  "broadcast_in_dim": _broadcast_in_dim,
  "reshape": _reshape,
  "squeeze": _squeeze,
  "expand_dims": _expand_dims,
  "transpose": _transpose,
  "concatenate": _concatenate,
  "stack": _stack,
  "unstack": _unstack,
  "iota": _iota,
  "slice": _slice,
  "pad": _pad,
  "dot_general": _dot_general,
  "reduce_window_max": _reduce_window_max,
}


def supports(primitive: str) -> bool:
  """Whether translate handles the JAX primitive (conv_general_dilated has its own function)."""
  return primitive in _TRANSLATORS or primitive in _ELEMENTWISE or primitive in _REDUCTIONS


def translate(g: Graph, eqn, names: list[str]) -> str | list[str]:
  """The ONNX nodes of one jaxpr equation whose operands are the ONNX values `names`.

  Returns:
    The name of the output, or a list of them for a primitive with several.
  """
  prim = eqn.primitive.name
  if prim in _TRANSLATORS:
    return _TRANSLATORS[prim](g, eqn, names)
  if prim in _ELEMENTWISE:
    return g.op(_ELEMENTWISE[prim], names)
  axes = g.const(np.array(eqn.params["axes"], np.int64))
  return g.op(_REDUCTIONS[prim], [names[0], axes], keepdims=0)
