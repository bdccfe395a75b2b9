namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    public void LoraMatMul(Tensor x, Tensor w, Tensor loraA, Tensor loraB, float scale, Tensor y, Tensor xa)
    {
        const string op = "LoraMatMul";
        var s = LoraShape.Of(op, x, w, loraA, loraB, scale);
        Guard.On(op, x.Accelerator, y, "y");
        Guard.On(op, x.Accelerator, xa, "xa");
        Guard.Shape(op, y, "y", s.LeadingShape(x, s.Out));
        Guard.Shape(op, xa, "xa", s.LeadingShape(x, s.Rank));
        Tensor x2 = s.Flat(x, s.In), y2 = s.Flat(y, s.Out), xa2 = s.Flat(xa, s.Rank);

        Gemm(x2, false, loraA, true, xa2, 1f, 0f);      // xa = x A^T           [T, r]
        Gemm(x2, false, w, true, y2, 1f, 0f);           // y  = x W^T           [T, out]
        Gemm(xa2, false, loraB, true, y2, scale, 1f);   // y += scale xa B^T
    }

    public void LoraMatMulBackward(Tensor x, Tensor w, Tensor loraA, Tensor loraB, float scale, Tensor xa, Tensor dy,
        Tensor? dx, Tensor? dA, Tensor? dB)
    {
        const string op = "LoraMatMulBackward";
        var s = LoraShape.Of(op, x, w, loraA, loraB, scale);
        Guard.On(op, x.Accelerator, xa, "xa");
        Guard.On(op, x.Accelerator, dy, "dy");
        Guard.Shape(op, xa, "xa", s.LeadingShape(x, s.Rank));
        Guard.Shape(op, dy, "dy", s.LeadingShape(x, s.Out));
        Guard.Gradient(op, x.Accelerator, dx, "dx", x, "x");
        Guard.Gradient(op, x.Accelerator, dA, "dA", loraA, "loraA");
        Guard.Gradient(op, x.Accelerator, dB, "dB", loraB, "loraB");
        Tensor x2 = s.Flat(x, s.In), xa2 = s.Flat(xa, s.Rank), dy2 = s.Flat(dy, s.Out);

        // y = x W^T + scale xa B^T with xa = x A^T:
        //   dB += scale dy^T xa;   dxa = scale dy B;   dA += dxa^T x;   dx += dy W + dxa A.
        if (dB is not null) Gemm(dy2, true, xa2, false, dB, scale, 1f);
        if (dx is null && dA is null) return;
        using var dxa = x.Accelerator.Scratch.Rent(s.Rows, s.Rank);
        Gemm(dy2, false, loraB, false, dxa, scale, 0f);
        if (dA is not null) Gemm(dxa, true, x2, false, dA, 1f, 1f);
        if (dx is not null)
        {
            var dx2 = s.Flat(dx, s.In);
            Gemm(dy2, false, w, false, dx2, 1f, 1f);
            Gemm(dxa, false, loraA, false, dx2, 1f, 1f);
        }
    }

    /// <summary>Checked LoRA sizes: x [.., In] flattened to Rows, W [Out, In], A [Rank, In], B [Out, Rank].</summary>
    internal readonly record struct LoraShape(int Rows, int In, int Out, int Rank)
    {
        public static LoraShape Of(string op, Tensor x, Tensor w, Tensor loraA, Tensor loraB, float scale, bool host = true)
        {
            ArgumentNullException.ThrowIfNull(x);
            ArgumentNullException.ThrowIfNull(w);
            ArgumentNullException.ThrowIfNull(loraA);
            ArgumentNullException.ThrowIfNull(loraB);
            if (host) OnCpu(op, x, "x");
            else x.Memory.ThrowIfDisposed();
            Guard.On(op, x.Accelerator, w, "w");
            Guard.On(op, x.Accelerator, loraA, "loraA");
            Guard.On(op, x.Accelerator, loraB, "loraB");
            Guard.Finite(op, scale, nameof(scale));
            if (x.Rank is not (2 or 3)) Guard.Rank(op, x, "x", 2, "[T, in] or [batch, T, in]");
            Guard.Rank(op, w, "w", 2, "[out, in]");
            int inDim = x.Dim(-1), outDim = w.Dim(0);
            Guard.Shape(op, w, "w", outDim, inDim);
            Guard.Rank(op, loraA, "loraA", 2, "[r, in]");
            int rank = loraA.Dim(0);
            Guard.Shape(op, loraA, "loraA", rank, inDim);
            Guard.Shape(op, loraB, "loraB", outDim, rank);
            int rows = x.Rank == 2 ? x.Dim(0) : x.Dim(0) * x.Dim(1);
            return new LoraShape(rows, inDim, outDim, rank);
        }

        /// <summary>x's leading axes followed by <paramref name="last"/>.</summary>
        public int[] LeadingShape(Tensor x, int last)
        {
            var shape = x.Shape.ToArray();
            shape[^1] = last;
            return shape;
        }

        /// <summary>The tensor as [Rows, cols] (leading axes merged; storage is contiguous).</summary>
        public Tensor Flat(Tensor t, int cols) => t.Rank == 2 ? t : t.View(Rows, cols);
    }
}
