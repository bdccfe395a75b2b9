namespace UioLlm.Kernels.Cpu;

public sealed unsafe partial class CpuKernels
{
    /// <summary>Tokens x d below which the embedding scatter-add stays on the calling thread.</summary>
    private const int EmbeddingParallelElements = 1 << 16;

    public void Embedding(Tensor table, ReadOnlySpan<int> ids, Tensor output)
    {
        const string op = "Embedding";
        int d = CheckEmbedding(op, table, "table", ids, output, "output");
        OpsCheck.Disjoint(op, table, "table", output, "output");
        float* src = table.Pointer, dst = output.Pointer;
        long rowBytes = 4L * d;
        for (int t = 0; t < ids.Length; t++)
            Buffer.MemoryCopy(src + (long)ids[t] * d, dst + (long)t * d, rowBytes, rowBytes);
    }

    public void EmbeddingBackward(ReadOnlySpan<int> ids, Tensor dOutput, Tensor dTable)
    {
        const string op = "EmbeddingBackward";
        int d = CheckEmbedding(op, dTable, "dTable", ids, dOutput, "dOutput");
        OpsCheck.Disjoint(op, dOutput, "dOutput", dTable, "dTable");
        float* src = dOutput.Pointer, dst = dTable.Pointer;
        if ((long)ids.Length * d < EmbeddingParallelElements || d < 128)
        {
            ScatterAddColumns(ids, src, dst, d, 0, d);
            return;
        }
        fixed (int* pid = ids)
            ScatterAddParallel(pid, ids.Length, src, dst, d);
    }

    /// <summary>Shared checks; returns d. Every id is checked before any memory is touched.</summary>
    internal static int CheckEmbedding(string op, Tensor table, string tableName, ReadOnlySpan<int> ids, Tensor rows, string rowsName, bool host = true)
    {
        var acc = OpsCheck.First(op, table, tableName, host);
        OpsCheck.On(op, acc, rows, rowsName);
        Guard.Rank(op, table, tableName, 2, "[V, d]");
        int vocab = table.Dim(0), d = table.Dim(1);
        if (rows.Rank < 2 || rows.Dim(-1) != d || rows.Length != (long)ids.Length * d)
            throw new ArgumentException(
                $"{op}: {rowsName} has shape {rows.ShapeString}, expected [{ids.Length}, {d}] ({ids.Length} ids, {tableName} {table.ShapeString})", rowsName);
        for (int t = 0; t < ids.Length; t++)
            if ((uint)ids[t] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(ids), ids[t], $"{op}: ids[{t}] = {ids[t]} is outside the vocabulary of size {vocab}");
        return d;
    }

    /// <summary>
    /// Race-free parallel scatter-add: each worker owns a band of columns and walks every token, so two
    /// workers never write the same element even when ids repeat.
    /// </summary>
    private void ScatterAddParallel(int* ids, int count, float* src, float* dst, int d)
    {
        int bands = Math.Min(Threads, d / 64);
        ParallelFor(bands, b =>
        {
            // Band edges on 16-float boundaries keep every band's rows vector-aligned relative to each other.
            int c0 = (int)((long)d * b / bands) & ~15, c1 = b == bands - 1 ? d : (int)((long)d * (b + 1) / bands) & ~15;
            ScatterAddColumns(new ReadOnlySpan<int>(ids, count), src, dst, d, c0, c1 - c0);
        });
    }

    /// <summary>dst[ids[t], c0 .. c0+width) += src[t, c0 .. c0+width) for every token t.</summary>
    private static void ScatterAddColumns(ReadOnlySpan<int> ids, float* src, float* dst, int d, int c0, int width)
    {
        for (int t = 0; t < ids.Length; t++)
        {
            float* from = src + (long)t * d + c0, to = dst + (long)ids[t] * d + c0;
            BinaryRange(ElementOp.Add, to, from, to, width, 0f);
        }
    }
}
