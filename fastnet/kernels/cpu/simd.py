"""Vector intrinsics for the CPU kernels: a register-blocked multiply-add tile, in LLVM IR.

Numba compiles a tile of accumulators written as plain loops to scalar multiply-adds, one at a time
(an 8-channel x 4-pixel tile became vfmadd231ss); an intrinsic that names the vectors itself keeps
the whole tile in vector registers for the length of a sum (a 16 x 5 tile ran at the core's peak:
DESIGN.md, Speed). This module has one such tile, in two shapes, used by all three passes of the
direct convolution (conv_direct.py):

    tile(a, a0, b, off, off0, n, col, col0, out):
        for r < R, v < LANES:
            out[r*LANES + v] = sum_{l < n} a[a0 + l*LANES + v] * b[off[off0 + l] + col[col0 + r]]

a LANES-wide row of `a` (a vector load) times one entry of `b` (a scalar broadcast), for R columns
at once; `off` gives each step's offset into b, `col` each column's (offset tables, as in XNNPACK's
indirection). LANES x R = 96 entries: twelve vectors of 8, the accumulators, plus the row of a and
one broadcast, fit the 16 vector registers of AVX2 with none spilled, and twelve independent
sums keep both multiply-add pipes of a core busy.

    tile_16x6: LANES = 16 (two vectors of 8), R = 6
    tile_8x12: LANES = 8 (one vector of 8), R = 12       (for 8 or fewer channels)

Vectors of 8 of the arrays' dtype: <8 x float> (one ymm register, every AVX2 machine) in float32;
in float64, <8 x double>, which LLVM splits into two <4 x double> (slower, spills; float64 is for
gradient checks). Each product is llvm.fma (one rounding). n = 0 writes zeros.
a, b, out float arrays of one dtype (1-D, C-contiguous); off, col int64 (1-D). No bounds are
checked: the caller's tables say where to read.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

WIDTH = 8       # elements in one vector


def _make_tile(lanes, columns):
    """The intrinsic tile for LANES = lanes (a multiple of WIDTH) and R = columns."""
    nvec = lanes // WIDTH

    @intrinsic
    def tile(typingctx, a, a0, b, off, off0, n, col, col0, out):
        for array in (a, b, out, off, col):
            if not (isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C"):
                return None
        if not (isinstance(a.dtype, types.Float) and a.dtype == b.dtype == out.dtype):
            return None
        if off.dtype != types.int64 or col.dtype != types.int64:
            return None
        i = types.intp
        sig = types.void(a, i, b, off, i, i, col, i, out)

        def codegen(context, builder, signature, args):
            a_arr, a0_v, b_arr, off_arr, off0_v, n_v, col_arr, col0_v, out_arr = args
            ta, _, tb, toff, _, _, tcol, _, tout = signature.args
            pa = context.make_array(ta)(context, builder, a_arr).data
            pb = context.make_array(tb)(context, builder, b_arr).data
            poff = context.make_array(toff)(context, builder, off_arr).data
            pcol = context.make_array(tcol)(context, builder, col_arr).data
            pout = context.make_array(tout)(context, builder, out_arr).data
            scalar = context.get_data_type(ta.dtype)
            size = context.get_abi_sizeof(scalar)
            vec = ir.VectorType(scalar, WIDTH)
            i32, i64 = ir.IntType(32), ir.IntType(64)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                f"llvm.fma.v{WIDTH}f{size * 8}")
            splat_mask = ir.Constant(ir.VectorType(i32, WIDTH), [0] * WIDTH)
            undef = ir.Constant(vec, ir.Undefined)

            def vector_at(pointer, index):          # the WIDTH elements from pointer[index]
                return builder.bitcast(builder.gep(pointer, [index]), vec.as_pointer())

            # the accumulators: entry-block allocas, which LLVM promotes to registers
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(vec, None)) for _ in range(nvec)]
                   for _ in range(columns)]
            # each column's base pointer into b, read once
            bcol = [builder.gep(pb, [builder.load(builder.gep(pcol, [builder.add(col0_v, ir.Constant(i64, r))]))])
                    for r in range(columns)]
            arow0 = builder.gep(pa, [a0_v])
            with cgutils.for_range(builder, n_v) as loop:
                l = loop.index
                arow = builder.gep(arow0, [builder.mul(l, ir.Constant(i64, lanes))])
                avec = [builder.load(vector_at(arow, ir.Constant(i64, v * WIDTH)), align=size)
                        for v in range(nvec)]
                step = builder.load(builder.gep(poff, [builder.add(off0_v, l)]))
                for r in range(columns):
                    s = builder.load(builder.gep(bcol[r], [step]))
                    bvec = builder.shuffle_vector(builder.insert_element(undef, s, ir.Constant(i32, 0)),
                                                  undef, splat_mask)
                    for v in range(nvec):
                        builder.store(builder.call(fma, [avec[v], bvec, builder.load(acc[r][v])]), acc[r][v])
            for r in range(columns):
                for v in range(nvec):
                    builder.store(builder.load(acc[r][v]),
                                  vector_at(pout, ir.Constant(i64, r * lanes + v * WIDTH)), align=size)
            return context.get_dummy_value()

        return sig, codegen

    return tile


TILE = 96                            # LANES x R of both tiles: the size of a tile's `out`
tile_16x6 = _make_tile(16, 6)
tile_8x12 = _make_tile(8, 12)
