using UioLlm.Kernels;

namespace UioLlm.Model.Methods;

/// <summary>
/// The non-differentiable kNN memory of Memorizing Transformers and the Focused Transformer: the (key, value)
/// pairs of earlier segments at the memory layer, copied to the host as they were computed (no gradient ever
/// reaches them). Keys are stored before RoPE: memory keys carry no positions.
/// </summary>
public sealed class KnnMemory
{
    private readonly List<float> keys = [];
    private readonly List<float> values = [];

    /// <param name="kvHeads">Key/value heads of the memory layer.</param>
    /// <param name="headDim">Width of one head.</param>
    /// <param name="capacity">Most rows kept (the oldest are dropped first, as in Memorizing Transformers); 0: unlimited.</param>
    public KnnMemory(int kvHeads, int headDim, int capacity = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(kvHeads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        KvHeads = kvHeads;
        HeadDim = headDim;
        Capacity = capacity;
    }

    /// <summary>Most rows kept (0: unlimited).</summary>
    public int Capacity { get; }

    private void Trim()
    {
        int excess = Capacity == 0 ? 0 : Rows - Capacity;
        if (excess <= 0) return;
        keys.RemoveRange(0, excess * KvHeads * HeadDim);
        values.RemoveRange(0, excess * KvHeads * HeadDim);
    }

    public int KvHeads { get; }
    public int HeadDim { get; }

    /// <summary>Rows (tokens) stored.</summary>
    public int Rows => keys.Count / (KvHeads * HeadDim);

    /// <summary>Host bytes the memory holds (keys and values).</summary>
    public long Bytes => 4L * (keys.Count + values.Count);

    /// <summary>Row-major keys [Rows, KvHeads, HeadDim] (un-rotated).</summary>
    public ReadOnlySpan<float> Keys => System.Runtime.InteropServices.CollectionsMarshal.AsSpan(keys);

    /// <summary>Row-major values [Rows, KvHeads, HeadDim].</summary>
    public ReadOnlySpan<float> Values => System.Runtime.InteropServices.CollectionsMarshal.AsSpan(values);

    /// <summary>Appends rows: un-rotated keys and values, both [rows, KvHeads, HeadDim] (then drops the oldest beyond <see cref="Capacity"/>).</summary>
    public void Add(Tensor rawKeys, Tensor rowValues)
    {
        ArgumentNullException.ThrowIfNull(rawKeys);
        ArgumentNullException.ThrowIfNull(rowValues);
        var k = rawKeys.ToArray();
        var v = rowValues.ToArray();
        if (k.Length != v.Length || k.Length % (KvHeads * HeadDim) != 0)
            throw new ArgumentException($"KnnMemory.Add: keys {rawKeys.ShapeString} and values {rowValues.ShapeString} are not [rows, {KvHeads}, {HeadDim}]");
        keys.AddRange(k);
        values.AddRange(v);
        Trim();
    }

    /// <summary>Appends every row of <paramref name="other"/>.</summary>
    public void Add(KnnMemory other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.KvHeads != KvHeads || other.HeadDim != HeadDim) throw new ArgumentException("KnnMemory.Add: another shape", nameof(other));
        keys.AddRange(other.keys);
        values.AddRange(other.values);
        Trim();
    }

    /// <summary>
    /// The rows with the <paramref name="k"/> highest scores q.k (scaled by <paramref name="scale"/>) for one raw
    /// query head against key head <paramref name="kvHead"/>, highest first (<see cref="NearestKeys.TopK"/>); empty
    /// when k = 0 or nothing is stored.
    /// </summary>
    public List<(double Score, int Row)> TopK(ReadOnlySpan<float> query, int kvHead, int k, double scale)
    {
        int rows = Rows;
        if (k <= 0 || rows == 0) return [];
        var scores = new double[rows];
        var all = Keys;
        for (int j = 0; j < rows; j++) scores[j] = scale * HostAttention.Dot(query, all.Slice((j * KvHeads + kvHead) * HeadDim, HeadDim));
        return NearestKeys.TopK(scores, Math.Min(k, rows));
    }
}
