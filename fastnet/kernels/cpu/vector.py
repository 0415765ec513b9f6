"""Short vectors for the CPU kernels: a Numba type for WIDTH elements of an array's dtype, held in
one LLVM vector value, and the few operations the Winograd transforms (conv_winograd.py) need.

LLVM does not vectorise those transforms by itself, in any layout tried (channel-last with the
channel loop innermost, flat arrays, fastmath): every add stayed a scalar vaddss. Code written on
Vector values compiles to one vector instruction per operation instead: <8 x float> is one ymm
register (every AVX2 machine); float64's <8 x double> LLVM splits into two <4 x double> (correct,
and float64 is for gradient checks).

    load(a, index)               a[index], a[index with last + 1], ... : WIDTH consecutive elements
                                 along a's last axis (a C-contiguous)
    store(a, index, x)           the same elements = x
    gather(a, index, count)      lane k = a[index with index[1] + k] for k < count, 0 past count:
                                 lanes along axis 1 (NCHW's channels), any layout (a's strides)
    scatter(a, index, x, count)  a[index with index[1] + k] = lane k, for k < count only
    splat(s)                     every lane = s (s a float of the vector's dtype)
    maximum(x, y)                lane-wise x > y ? x : y (as the scalar ReLU `v if v > 0 else 0`)
    x + y, x - y, x * y, -x      lane-wise, IEEE (no fastmath: the same roundings as scalar code)

`index` is a tuple of one integer per axis of a; no bounds are checked (the caller's loops say
where to read). The arithmetic operators make the scalar helpers of a transform (`_bt(a0, a1, a2,
a3)` and the like) work on vectors unchanged.
"""

import operator

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

WIDTH = 8       # elements in one vector


class Vector(types.Type):
    """WIDTH elements of the float type `dtype`, as one LLVM vector value."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"Vector({dtype} x {WIDTH})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), WIDTH))


def _float_array(a):
    return isinstance(a, types.Array) and isinstance(a.dtype, types.Float)


def _index(a, index):
    return isinstance(index, types.BaseTuple) and len(index) == a.ndim and all(
        isinstance(i, types.Integer) for i in index)


def _pointer(context, builder, aty, a, ity, index):
    """The address of a[index] (a typed pointer to one element)."""
    array = context.make_array(aty)(context, builder, a)
    inds = [context.cast(builder, i, t, types.intp)
            for i, t in zip(cgutils.unpack_tuple(builder, index, len(ity)), ity)]
    return array, cgutils.get_item_pointer(context, builder, aty, array, inds)


def _align(context, dtype):
    return context.get_abi_sizeof(context.get_data_type(dtype))


@intrinsic
def load(typingctx, a, index):
    """WIDTH consecutive elements of a from a[index] along its last axis (a C-contiguous)."""
    if not (_float_array(a) and a.layout == "C" and _index(a, index)):
        return None

    def codegen(context, builder, sig, args):
        _, pointer = _pointer(context, builder, a, args[0], index, args[1])
        vec = context.get_value_type(sig.return_type)
        return builder.load(builder.bitcast(pointer, vec.as_pointer()), align=_align(context, a.dtype))

    return Vector(a.dtype)(a, index), codegen


@intrinsic
def store(typingctx, a, index, x):
    """a[index] and the WIDTH - 1 elements after it along the last axis = x's lanes."""
    if not (_float_array(a) and a.layout == "C" and _index(a, index) and x == Vector(a.dtype)):
        return None

    def codegen(context, builder, sig, args):
        _, pointer = _pointer(context, builder, a, args[0], index, args[1])
        vec = context.get_value_type(x)
        builder.store(args[2], builder.bitcast(pointer, vec.as_pointer()), align=_align(context, a.dtype))
        return context.get_dummy_value()

    return types.void(a, index, x), codegen


def _lanes(context, builder, aty, array, pointer, count):
    """(lane k's pointer, k < count) for each lane: stepping a's stride of axis 1 from pointer; a
    lane past count points at lane 0's element (always inside a) and is not to be used."""
    stride = cgutils.unpack_tuple(builder, array.strides, aty.ndim)[1]
    base = builder.ptrtoint(pointer, cgutils.intp_t)
    lanes = []
    for k in range(WIDTH):
        k_ = ir.Constant(cgutils.intp_t, k)
        inside = builder.icmp_signed("<", k_, count)
        step = builder.select(inside, builder.mul(stride, k_), ir.Constant(cgutils.intp_t, 0))
        lanes.append((builder.inttoptr(builder.add(base, step), pointer.type), inside))
    return lanes


@intrinsic
def gather(typingctx, a, index, count):
    """Lane k = a[index with index[1] + k] for k < count, else 0 (lanes along axis 1, a's own
    strides: any layout)."""
    if not (_float_array(a) and a.ndim >= 2 and _index(a, index) and isinstance(count, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        array, pointer = _pointer(context, builder, a, args[0], index, args[1])
        n = context.cast(builder, args[2], count, types.intp)
        zero = ir.Constant(context.get_value_type(a.dtype), 0)
        vec = ir.Constant(context.get_value_type(sig.return_type), None)
        for k, (lane, inside) in enumerate(_lanes(context, builder, a, array, pointer, n)):
            value = builder.select(inside, builder.load(lane), zero)     # lane 0's read is in bounds
            vec = builder.insert_element(vec, value, ir.Constant(ir.IntType(32), k))
        return vec

    return Vector(a.dtype)(a, index, count), codegen


@intrinsic
def scatter(typingctx, a, index, x, count):
    """a[index with index[1] + k] = x's lane k for k < count (lanes along axis 1, any layout)."""
    if not (_float_array(a) and a.ndim >= 2 and _index(a, index) and x == Vector(a.dtype)
            and isinstance(count, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        array, pointer = _pointer(context, builder, a, args[0], index, args[1])
        n = context.cast(builder, args[3], count, types.intp)
        for k, (lane, inside) in enumerate(_lanes(context, builder, a, array, pointer, n)):
            with builder.if_then(inside, likely=True):
                builder.store(builder.extract_element(args[2], ir.Constant(ir.IntType(32), k)), lane)
        return context.get_dummy_value()

    return types.void(a, index, x, count), codegen


@intrinsic
def splat(typingctx, s):
    """A vector of WIDTH copies of the float s."""
    if not isinstance(s, types.Float):
        return None

    def codegen(context, builder, sig, args):
        vec = context.get_value_type(sig.return_type)
        one = builder.insert_element(ir.Constant(vec, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH))

    return Vector(s)(s), codegen


def _binary(name, emit):
    """An intrinsic x (op) y on two vectors of one dtype; emit(builder, x, y) makes the value."""
    def template(typingctx, x, y):
        if not (isinstance(x, Vector) and x == y):
            return None
        return x(x, y), lambda context, builder, sig, args: emit(builder, *args)
    template.__name__ = name
    return intrinsic(template)


_add = _binary("_add", lambda b, x, y: b.fadd(x, y))
_sub = _binary("_sub", lambda b, x, y: b.fsub(x, y))
_mul = _binary("_mul", lambda b, x, y: b.fmul(x, y))
maximum = _binary("maximum", lambda b, x, y: b.select(b.fcmp_ordered(">", x, y), x, y))


@intrinsic
def _neg(typingctx, x):
    if not isinstance(x, Vector):
        return None
    return x(x), lambda context, builder, sig, args: builder.fneg(args[0])


def _overload_binary(op, impl):
    @overload(op)
    def vector_op(x, y):
        if isinstance(x, Vector) and x == y:
            return lambda x, y: impl(x, y)


_overload_binary(operator.add, _add)
_overload_binary(operator.sub, _sub)
_overload_binary(operator.mul, _mul)


@overload(operator.neg)
def _vector_neg(x):
    if isinstance(x, Vector):
        return lambda x: _neg(x)
