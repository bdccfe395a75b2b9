using UioLlm.Kernels;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Kernels.Ops;

namespace UioLlm.Tests.Kernels;

[Collection(OpsCollection.Name)]
public class EmbeddingTests
{
    private readonly Accelerator acc = TestBackend.Shared;
    private IKernels K => acc.Kernels;

    public static TheoryData<int, int, int> Cases()
    {
        var data = new TheoryData<int, int, int>();
        foreach (int w in new[] { 128, 256, 512 })
            foreach (var (vocab, d) in new[] { (1, 1), (5, 7), (11, 17), (9, 33) })
                data.Add(w, vocab, d);
        data.Add(256, 50, 1000); // parallel scatter-add (column bands)
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void GatherAndScatterAddMatchReference(int width, int vocab, int d)
    {
        using var simd = Width(width);
        var rng = new Rng(vocab * 7 + d);
        int tokens = 70;
        int[] ids = rng.Ints(tokens, 0, vocab);
        ids[1] = ids[0]; // repeated ids must add up
        float[] table = rng.Uniform(vocab * d), g = rng.Uniform(tokens * d);
        using var tt = Tensor(acc, table, "table", vocab, d);
        using var to = acc.Allocate([tokens, d], "output");
        K.Embedding(tt, ids, to);
        Assert.Equal(EmbeddingReference.Forward(D(table), d, ids), D(to.ToArray()));

        // Gradient of L = sum(output * g) with respect to the table, by finite differences on small cases.
        using var tg = Tensor(acc, g, "dOutput", tokens, d);
        using var dt = acc.Allocate([vocab, d], "dTable");
        K.EmbeddingBackward(ids, tg, dt);
        double[] expected = vocab * d <= 300
            ? FiniteDifference.Gradient(v => FiniteDifference.Dot(EmbeddingReference.Forward(v, d, ids), g), D(table))
            : ScatterAdd(ids, g, vocab, d);
        Check.RelativeNorm(expected, dt.ToArray(), 1e-6, "dTable");

        K.EmbeddingBackward(ids, tg, dt);
        Check.Close(expected.Select(v => 2 * v).ToArray(), dt.ToArray(), 1e-5, 1e-5, "dTable accumulated twice");
    }

    [Fact]
    public void BatchedOutputAndEmptyIdsWork()
    {
        var rng = new Rng(2);
        float[] table = rng.Uniform(6 * 4);
        int[] ids = [5, 0, 3, 3, 1, 2];
        using var tt = Tensor(acc, table, "table", 6, 4);
        using var to = acc.Allocate([2, 3, 4], "output");
        K.Embedding(tt, ids, to);
        Assert.Equal(EmbeddingReference.Forward(D(table), 4, ids), D(to.ToArray()));
        using var none = acc.Allocate([0, 4], "output");
        K.Embedding(tt, [], none);
    }

    [Fact]
    public void BadIdsAndShapesThrow()
    {
        using var table = acc.Allocate([10, 4], "table");
        using var output = acc.Allocate([3, 4], "output");
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => K.Embedding(table, [1, 10, 2], output));
        Assert.Contains("ids[1] = 10", e.Message);
        Assert.Contains("size 10", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => K.EmbeddingBackward([-1, 0, 0], output, table));
        Assert.Contains("output has shape [3, 4], expected [2, 4]", Assert.Throws<ArgumentException>(() => K.Embedding(table, [1, 2], output)).Message);
        using var flat = acc.Allocate([40], "table");
        Assert.Contains("table has shape [40]", Assert.Throws<ArgumentException>(() => K.Embedding(flat, [1, 2, 3], output)).Message);
    }

    private static double[] ScatterAdd(int[] ids, float[] g, int vocab, int d)
    {
        var r = new double[vocab * d];
        for (int t = 0; t < ids.Length; t++)
            for (int i = 0; i < d; i++) r[ids[t] * d + i] += g[t * d + i];
        return r;
    }
}
