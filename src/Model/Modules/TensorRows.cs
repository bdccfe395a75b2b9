using UioLlm.Kernels;

namespace UioLlm.Model.Modules;

/// <summary>Row moves on cache buffers (first axis): the evictions and growth of KV caches and memories.</summary>
internal static class TensorRows
{
    /// <summary>Rows [from, from + count) move to [to, to + count); the ranges may overlap (copied through scratch).</summary>
    public static void Move(Tensor t, int from, int to, int count)
    {
        if (count <= 0 || from == to) return;
        var kernels = t.Accelerator.Kernels;
        using var moved = t.Accelerator.Scratch.Rent(t.Slice(from, count).Shape);
        kernels.Copy(t.Slice(from, count), moved);
        kernels.Copy(moved, t.Slice(to, count));
    }

    /// <summary>A new buffer of <paramref name="rows"/> rows holding the first <paramref name="keep"/> rows of <paramref name="old"/>, which is disposed.</summary>
    public static Tensor Grow(Tensor old, int rows, int keep)
    {
        var shape = old.Shape.ToArray();
        shape[0] = rows;
        var fresh = old.Accelerator.Allocate(shape, old.Name);
        if (keep > 0) old.Accelerator.Kernels.Copy(old.Slice(0, keep), fresh.Slice(0, keep));
        old.Dispose();
        return fresh;
    }
}
