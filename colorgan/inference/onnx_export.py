"""A jaxpr -> ONNX translator for the exported colorize function (`--format=onnx`).

Why not a converter package: with this stack, tf2onnx cannot read jax2tf's SavedModels (their
computation is one XlaCallModule op of StableHLO) and converts the TFLite model to a wrong graph;
jax2onnx from 0.13.1 on requires orbax-checkpoint < 0.11.37 (colorgan pins 0.12.8) and its older
releases fail on jax 0.10 (removed jax internals, symbolic dimensions). The function is small in
primitives (elementwise math, iota, dot_general, convolutions, max pooling, reductions), so it is
translated here, primitive by primitive, with `onnx.helper`; the parity tests run the result in
onnxruntime against --mode=colorize.

Dynamic shapes: the function is traced with jax.export symbolic dimensions; a shape that holds
one (iota, broadcast, reshape) is built at run time from the input's Shape. Values computed from
constants alone (the weights, BatchNorm's folded scales) are evaluated here and stored as
initializers.
"""

from typing import Any, Callable, Sequence

import jax
from jax import export as jax_export
import jax.numpy as jnp
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


class _Graph:
  """ONNX nodes and initializers under construction, with the values of constant jaxpr variables."""

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


def _static(shape) -> bool:
  return all(isinstance(d, int) for d in shape)


def _onnx_type(dtype) -> int:
  try:
    return _TO_ONNX_TYPE[np.dtype(dtype)]
  except KeyError:
    raise UnsupportedError(f"dtype {dtype}") from None


class _Translator:
  """Walks a jaxpr, folding constant computations and emitting ONNX nodes for the rest."""

  def __init__(self, graph: _Graph):
    self.g = graph
    self.env = {}  # jaxpr Var -> ("const", np.ndarray) or ("node", onnx name)

  # -- values
  def read(self, atom):
    if isinstance(atom, jax.extend.core.Literal):
      return ("const", np.asarray(atom.val, atom.aval.dtype))
    return self.env[atom]

  def name_of(self, atom) -> str:
    kind, value = self.read(atom)
    return self.g.const(value) if kind == "const" else value

  # -- walking
  def run(self, jaxpr, consts, args):
    for var, value in zip(jaxpr.constvars, consts):
      self.env[var] = value
    for var, value in zip(jaxpr.invars, args):
      self.env[var] = value
    for eqn in jaxpr.eqns:
      outs = self.equation(eqn)
      for var, value in zip(eqn.outvars, outs):
        self.env[var] = value
    return [self.read(v) for v in jaxpr.outvars]

  def equation(self, eqn):
    prim, params = eqn.primitive.name, eqn.params
    inputs = [self.read(v) for v in eqn.invars]
    if prim in ("jit", "pjit", "closed_call", "core_call", "remat", "checkpoint"):
      closed = params.get("jaxpr") or params.get("call_jaxpr")
      return self._inline(closed, inputs)
    if prim == "custom_jvp_call":
      return self._inline(params["call_jaxpr"], inputs)
    if prim == "custom_vjp_call":
      return self._inline(params.get("call_jaxpr") or params["fun_jaxpr"], inputs)
    if (
      all(kind == "const" for kind, _ in inputs)
      and all(_static(v.aval.shape) for v in eqn.outvars)
      and prim != "dim_as_value"
    ):
      outs = eqn.primitive.bind(*[jnp.asarray(value) for _, value in inputs], **params)
      outs = outs if eqn.primitive.multiple_results else [outs]
      return [("const", np.asarray(o)) for o in outs]
    handler = getattr(self, f"_{prim}", None)
    if handler is None and prim not in _ELEMENTWISE and prim not in _REDUCTIONS:
      raise UnsupportedError(f"the JAX primitive {prim!r}")
    # A convolution's kernel becomes an initializer in its own layout: only its input is named here.
    operands = eqn.invars[:1] if prim == "conv_general_dilated" else eqn.invars
    names = [self.name_of(v) for v in operands]
    if handler is not None:
      outs = handler(eqn, names)
    elif prim in _ELEMENTWISE:
      outs = self.g.op(_ELEMENTWISE[prim], names)
    else:
      axes = self.g.const(np.array(params["axes"], np.int64))
      outs = self.g.op(_REDUCTIONS[prim], [names[0], axes], keepdims=0)
    outs = outs if isinstance(outs, list) else [outs]
    return [("node", o) for o in outs]

  def _inline(self, closed, inputs):
    jaxpr = getattr(closed, "jaxpr", closed)
    consts = [("const", np.asarray(c)) for c in getattr(closed, "consts", ())]
    return _Translator(self.g).run(jaxpr, consts, inputs)

  # -- primitives (each returns an ONNX name or a list of them)
  def _dim_as_value(self, eqn, names):
    del names
    scalar = self.g.op("Squeeze", [self.g.shape_of([eqn.params["dim"]])])
    return self.g.op("Cast", [scalar], to=_onnx_type(eqn.outvars[0].aval.dtype))

  def _convert_element_type(self, eqn, names):
    return self.g.op("Cast", names, to=_onnx_type(eqn.params["new_dtype"]))

  def _ne(self, eqn, names):
    del eqn
    return self.g.op("Not", [self.g.op("Equal", names)])

  def _and(self, eqn, names):
    bitwise = eqn.outvars[0].aval.dtype != np.bool_
    return self.g.op("BitwiseAnd" if bitwise else "And", names)

  def _or(self, eqn, names):
    bitwise = eqn.outvars[0].aval.dtype != np.bool_
    return self.g.op("BitwiseOr" if bitwise else "Or", names)

  def _not(self, eqn, names):
    bitwise = eqn.outvars[0].aval.dtype != np.bool_
    return self.g.op("BitwiseNot" if bitwise else "Not", names)

  def _rem(self, eqn, names):
    del eqn
    return self.g.op("Mod", names, fmod=1)  # lax.rem: the sign of the dividend, as C's fmod

  def _integer_pow(self, eqn, names):
    y = eqn.params["y"]
    if y < 1:
      raise UnsupportedError(f"integer_pow with exponent {y}")
    out = names[0]
    for _ in range(y - 1):
      out = self.g.op("Mul", [out, names[0]])
    return out

  def _cbrt(self, eqn, names):
    del eqn
    x = names[0]
    third = self.g.const(np.array(1 / 3, np.float32))
    magnitude = self.g.op("Pow", [self.g.op("Abs", [x]), third])
    return self.g.op("Mul", [self.g.op("Sign", [x]), magnitude])

  def _rsqrt(self, eqn, names):
    del eqn
    return self.g.op("Reciprocal", [self.g.op("Sqrt", names)])

  def _round(self, eqn, names):
    if eqn.params["rounding_method"] != jax.lax.RoundingMethod.TO_NEAREST_EVEN:
      raise UnsupportedError("round away from zero")
    return self.g.op("Round", names)  # ONNX rounds half to even

  def _select_n(self, eqn, names):
    if len(names) != 3 or eqn.invars[0].aval.dtype != np.bool_:
      raise UnsupportedError("select_n with other than a boolean predicate and two cases")
    return self.g.op("Where", [names[0], names[2], names[1]])

  def _clamp(self, eqn, names):
    del eqn
    low, x, high = names
    return self.g.op("Min", [self.g.op("Max", [x, low]), high])

  def _broadcast_in_dim(self, eqn, names):
    shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    operand_shape = eqn.invars[0].aval.shape
    expanded = [1] * len(shape)
    for i, d in enumerate(dims):
      expanded[d] = operand_shape[i]
    x = self.g.op("Reshape", [names[0], self.g.shape_of(expanded)])
    return self.g.op("Expand", [x, self.g.shape_of(shape)])

  def _reshape(self, eqn, names):
    if eqn.params.get("dimensions"):
      raise UnsupportedError("reshape with dimensions")
    return self.g.op("Reshape", [names[0], self.g.shape_of(eqn.params["new_sizes"])])

  def _squeeze(self, eqn, names):
    axes = self.g.const(np.array(eqn.params["dimensions"], np.int64))
    return self.g.op("Squeeze", [names[0], axes])

  def _expand_dims(self, eqn, names):
    axes = self.g.const(np.array(eqn.params["dimensions"], np.int64))
    return self.g.op("Unsqueeze", [names[0], axes])

  def _transpose(self, eqn, names):
    return self.g.op("Transpose", names, perm=list(eqn.params["permutation"]))

  def _concatenate(self, eqn, names):
    return self.g.op("Concat", names, axis=eqn.params["dimension"])

  def _stack(self, eqn, names):
    axes = self.g.const(np.array([eqn.params["axis"]], np.int64))
    return self.g.op(
      "Concat", [self.g.op("Unsqueeze", [n, axes]) for n in names], axis=eqn.params["axis"]
    )

  def _unstack(self, eqn, names):
    axis = eqn.params["axis"]
    parts = self.g.op(
      "Split", names, outputs=len(eqn.outvars), axis=axis, num_outputs=len(eqn.outvars)
    )
    parts = parts if isinstance(parts, list) else [parts]
    axes = self.g.const(np.array([axis], np.int64))
    return [self.g.op("Squeeze", [p, axes]) for p in parts]

  def _iota(self, eqn, names):
    del names
    shape, dimension = eqn.params["shape"], eqn.params["dimension"]
    dtype = eqn.params["dtype"]
    limit = self.g.op("Squeeze", [self.g.shape_of([shape[dimension]])])
    values = self.g.op(
      "Range", [self.g.const(np.array(0, np.int64)), limit, self.g.const(np.array(1, np.int64))]
    )
    values = self.g.op("Cast", [values], to=_onnx_type(dtype))
    if len(shape) == 1:
      return values
    expanded = [1] * len(shape)
    expanded[dimension] = shape[dimension]
    values = self.g.op("Reshape", [values, self.g.shape_of(expanded)])
    return self.g.op("Expand", [values, self.g.shape_of(shape)])

  def _slice(self, eqn, names):
    starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * len(starts)
    if not (_static(starts) and _static(limits)):
      raise UnsupportedError("a slice with symbolic bounds")
    return self.g.op(
      "Slice",
      [
        names[0],
        self.g.const(np.array(starts, np.int64)),
        self.g.const(np.array(limits, np.int64)),
        self.g.const(np.arange(len(starts), dtype=np.int64)),
        self.g.const(np.array(strides, np.int64)),
      ],
    )

  def _pad(self, eqn, names):
    config = eqn.params["padding_config"]
    if any(interior for _, _, interior in config) or any(lo < 0 or hi < 0 for lo, hi, _ in config):
      raise UnsupportedError("pad with interior or negative padding")
    pads = [lo for lo, _, _ in config] + [hi for _, hi, _ in config]
    return self.g.op(
      "Pad", [names[0], self.g.const(np.array(pads, np.int64)), names[1]], mode="constant"
    )

  def _dot_general(self, eqn, names):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
    if not lb and lc == (lhs.ndim - 1,) and rc == (0,) and rhs.ndim == 2:
      out = self.g.op("MatMul", names)  # [..., k] @ [k, n]
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
      out = self.g.op("Einsum", names, equation=equation)
    wanted = eqn.params.get("preferred_element_type") or eqn.outvars[0].aval.dtype
    if np.dtype(wanted) != np.dtype(lhs.dtype):
      out = self.g.op("Cast", [out], to=_onnx_type(wanted))
    return out

  def _reduce_window_max(self, eqn, names):
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
    x = self.g.op("Transpose", names, perm=perm)
    y = self.g.op(
      "MaxPool",
      [x],
      kernel_shape=[p["window_dimensions"][i] for i in pooled],
      strides=[p["window_strides"][i] for i in pooled],
      pads=[p["padding"][i][0] for i in pooled] + [p["padding"][i][1] for i in pooled],
    )
    return self.g.op("Transpose", [y], perm=list(np.argsort(perm)))

  def _conv_general_dilated(self, eqn, names):
    p = eqn.params
    if p["batch_group_count"] != 1:
      raise UnsupportedError("a convolution with batch_group_count > 1")
    kind, kernel = self.read(eqn.invars[1])
    if kind != "const":
      raise UnsupportedError("a convolution whose kernel is not a constant")
    numbers = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = numbers.lhs_spec, numbers.rhs_spec, numbers.out_spec
    x = self.g.op("Transpose", [names[0]], perm=list(lhs_spec))  # -> N, C, spatial...
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
      y = self.g.op(
        "ConvTranspose",
        [x, self.g.const(np.swapaxes(flipped, 0, 1).copy())],
        strides=list(p["lhs_dilation"]),
        pads=pads,
        kernel_shape=k,
      )
    else:
      if any(pad < 0 for pad in pads):
        raise UnsupportedError("a convolution with negative padding")
      y = self.g.op(
        "Conv",
        [x, self.g.const(np.ascontiguousarray(kernel))],
        strides=list(p["window_strides"]),
        pads=pads,
        dilations=list(p["rhs_dilation"]),
        group=p["feature_group_count"],
        kernel_shape=list(spatial),
      )
    return self.g.op("Transpose", [y], perm=list(np.argsort(out_spec)))


def to_onnx(
  fn: Callable,
  input_shape: str,
  input_dtype,
  *,
  input_name: str,
  output_name: str,
  opset: int,
  dim_names: dict[str, str] | None = None,
) -> onnx.ModelProto:
  """Translates fn (one array in, one array out) into an ONNX model.

  Args:
    fn: the JAX function.
    input_shape: its input's shape in jax.export's syntax, e.g. "h, w, 3".
    input_dtype: its input's dtype.
    input_name, output_name: the graph's input and output names.
    opset: the ONNX opset (>= 18: reductions take their axes as inputs).
    dim_names: names of the symbolic dimensions in the ONNX graph (default: their own).

  Raises:
    UnsupportedError: fn uses a primitive or shape this translator does not handle.
  """
  shape = jax_export.symbolic_shape(input_shape)
  closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct(shape, input_dtype))
  graph = _Graph(opset)
  dim_names = dim_names or {}
  onnx_shape = []
  for axis, d in enumerate(shape):
    if isinstance(d, int):
      onnx_shape.append(d)
      continue
    if str(d) not in graph.dims:
      graph.dims[str(d)] = graph.op("Shape", [input_name], start=axis, end=axis + 1)
    onnx_shape.append(dim_names.get(str(d), str(d)))
  translator = _Translator(graph)
  consts = [("const", np.asarray(c)) for c in closed.consts]
  [(kind, out)] = translator.run(closed.jaxpr, consts, [("node", input_name)])
  if kind == "const":
    raise UnsupportedError("a function whose output does not depend on its input")
  graph.nodes.append(helper.make_node("Identity", [out], [output_name]))
  out_aval = closed.jaxpr.outvars[0].aval
  out_shape = [d if isinstance(d, int) else dim_names.get(str(d), str(d)) for d in out_aval.shape]
  model = helper.make_model(
    helper.make_graph(
      graph.nodes,
      "colorgan",
      [helper.make_tensor_value_info(input_name, _onnx_type(input_dtype), onnx_shape)],
      [helper.make_tensor_value_info(output_name, _onnx_type(out_aval.dtype), out_shape)],
      initializer=graph.initializers,
    ),
    opset_imports=[helper.make_opsetid("", opset)],
    producer_name="colorgan",
  )
  onnx.checker.check_model(model)
  return model
