using UioLlm.Kernels;

namespace UioLlm.Tests.Kernels;

/// <summary>
/// Dense boolean masks [Hq, Tq, Tk] built straight from the rules in AttentionMask's doc comment (not from
/// IsVisible): the ground truth for the mask tests and the dense attention reference.
/// </summary>
public static class DenseMasks
{
    public static bool[,,] Build(AttentionMask m, int hq, int tq, int tk)
    {
        var mask = new bool[hq, tq, tk];
        int p = m.PrefixLength;
        for (int h = 0; h < hq; h++)
            for (int i = 0; i < tq; i++)
            {
                int qpos = tk - tq + i;           // bottom-right alignment
                for (int j = 0; j < tk; j++)
                {
                    int rq = qpos - p, rk = j - p;
                    if (j < p)
                    {
                        // The prefix is seen by every query, except that a window spanning the prefix limits the
                        // ordinary (non-memory) queries of a step expansion to the prefix keys less than W positions back.
                        bool ordinary = m.MemoryCount > 0 && rq < tq - m.MemoryCount;
                        mask[h, i, j] = !(m.WindowSpansPrefix && ordinary) || qpos - j < m.Window;
                        continue;
                    }
                    mask[h, i, j] = m.MemoryCount > 0 ? StepExpansion(m, tq, rq, rk) : Rules(m, hq, h, rq, rk);
                }
            }
        return mask;
    }

    /// <summary>[L ordinary ; n memory]: ordinary tokens are causal (within the window W when W &gt; 0); memory m sees ordinary rk &lt; min((m+1)c, L) and itself (memory-causal: and every memory before it).</summary>
    private static bool StepExpansion(AttentionMask m, int tq, int rq, int rk)
    {
        int ordinary = tq - m.MemoryCount;
        bool queryIsMemory = rq >= ordinary, keyIsMemory = rk >= ordinary;
        if (!queryIsMemory) return rk <= rq && (m.Window == 0 || rq - rk < m.Window);   // a local layer's window
        if (keyIsMemory) return m.MemoryCausal ? rk <= rq : rk == rq;
        int memoryIndex = rq - ordinary;
        return rk < Math.Min((memoryIndex + 1) * m.StepStride, ordinary);
    }

    /// <summary>Causal, window + sinks and groups are each a constraint; a key is visible when all of them allow it.</summary>
    private static bool Rules(AttentionMask m, int hq, int h, int rq, int rk)
    {
        bool causalOk = !m.Causal || rk <= rq;
        bool windowOk = m.Window == 0 || rq - rk < m.Window || rk < m.Sinks;
        bool groupOk = true;
        if (m.GroupSize > 0)
        {
            bool upperHalf = h >= hq / 2;   // "heads h >= Hq/2"
            int shift = m.ShiftUpperHalfHeads && upperHalf ? m.GroupSize / 2 : 0;
            groupOk = Math.Floor((rq + shift) / (double)m.GroupSize) == Math.Floor((rk + shift) / (double)m.GroupSize);
        }
        return causalOk && windowOk && groupOk;
    }

    /// <summary>Mask configurations covering every kind and the combinations the engine uses: (mask, Hq, Tq, Tk).</summary>
    public static IEnumerable<(AttentionMask Mask, int Hq, int Tq, int Tk)> Configurations()
    {
        yield return (AttentionMask.None, 2, 9, 9);
        yield return (AttentionMask.None, 1, 12, 5);
        yield return (AttentionMask.CausalMask(), 2, 11, 11);
        yield return (AttentionMask.CausalMask(4), 2, 10, 14);
        yield return (AttentionMask.CausalMask(3), 1, 4, 17);
        yield return (AttentionMask.CausalMask(2), 1, 1, 9);
        yield return (AttentionMask.SlidingWindow(4), 1, 13, 13);
        yield return (AttentionMask.SlidingWindow(3, 2), 1, 15, 15);
        yield return (AttentionMask.SlidingWindow(5, 3, 4), 2, 9, 19);
        yield return (AttentionMask.SlidingWindow(40, 2, 1), 1, 9, 19);
        yield return (new AttentionMask { Window = 3, Sinks = 1 }, 1, 10, 10);
        yield return (AttentionMask.StepExpansion(3, 4), 1, 13, 13);
        yield return (AttentionMask.StepExpansion(4, 2, 5), 2, 14, 19);
        yield return (AttentionMask.StepExpansion(3, 10), 1, 9, 9);
        yield return (AttentionMask.StepExpansion(3, 4, window: 3), 1, 15, 15);
        yield return (AttentionMask.StepExpansion(2, 5, 3, window: 4), 2, 12, 15);
        yield return (AttentionMask.StepExpansion(4, 2, 5, memoryCausal: true), 2, 14, 19);
        yield return (AttentionMask.StepExpansion(3, 10, memoryCausal: true), 1, 9, 9);
        yield return (AttentionMask.StepExpansion(4, 2, 5, window: 3, memoryCausal: true, windowSpansPrefix: true), 2, 14, 19);
        yield return (AttentionMask.StepExpansion(2, 4, 6, window: 2, memoryCausal: true, windowSpansPrefix: true), 1, 10, 16);
        yield return (AttentionMask.StepExpansion(3, 3, 2, window: 5, windowSpansPrefix: true), 1, 12, 14);
        yield return (AttentionMask.StepExpansion(2, 2, 0, window: 2, memoryCausal: true, windowSpansPrefix: true), 1, 6, 6);
        yield return (AttentionMask.BlockDiagonal(4), 2, 13, 13);
        yield return (AttentionMask.BlockDiagonal(4, causal: false), 2, 13, 13);
        yield return (AttentionMask.BlockDiagonal(6, causal: true, shiftUpperHalfHeads: true), 4, 17, 17);
        yield return (AttentionMask.BlockDiagonal(5, causal: false, shiftUpperHalfHeads: true), 3, 16, 18);
        yield return (new AttentionMask { GroupSize = 4, Window = 3, Causal = true, PrefixLength = 2 }, 2, 12, 15);
    }
}

public class AttentionMaskTests
{
    public static TheoryData<int> ConfigurationIndices()
    {
        var data = new TheoryData<int>();
        for (int c = 0; c < DenseMasks.Configurations().Count(); c++) data.Add(c);
        return data;
    }

    [Theory]
    [MemberData(nameof(ConfigurationIndices))]
    public void IsVisibleAgreesWithHandBuiltMasks(int index)
    {
        var (mask, hq, tq, tk) = DenseMasks.Configurations().ElementAt(index);
        mask.Validate("test", tq, tk);
        var dense = DenseMasks.Build(mask, hq, tq, tk);
        for (int h = 0; h < hq; h++)
            for (int i = 0; i < tq; i++)
                for (int j = 0; j < tk; j++)
                    Assert.True(dense[h, i, j] == mask.IsVisible(h, hq, i, j, tq, tk), $"{mask}: head {h}, query {i}, key {j}: IsVisible says {!dense[h, i, j]}");
    }

    [Theory]
    [MemberData(nameof(ConfigurationIndices))]
    public void VisibleIntervalsAreExactlyTheVisibleKeys(int index)
    {
        var (mask, hq, tq, tk) = DenseMasks.Configurations().ElementAt(index);
        var bounds = new int[2 * AttentionMask.MaxIntervals];
        for (int h = 0; h < hq; h++)
            for (int i = 0; i < tq; i++)
            {
                int count = mask.VisibleIntervals(h, hq, i, tq, tk, bounds);
                Assert.InRange(count, 0, AttentionMask.MaxIntervals);
                var inside = new bool[tk];
                for (int t = 0; t < count; t++)
                {
                    int s = bounds[2 * t], e = bounds[2 * t + 1];
                    Assert.True(s < e, $"{mask} h{h} q{i}: interval {t} [{s}, {e}) is empty");
                    Assert.True(s >= 0 && e <= tk, $"{mask} h{h} q{i}: interval [{s}, {e}) leaves [0, {tk})");
                    if (t > 0) Assert.True(s > bounds[2 * t - 1], $"{mask} h{h} q{i}: intervals {t - 1} and {t} touch or are out of order");
                    for (int j = s; j < e; j++) inside[j] = true;
                }
                for (int j = 0; j < tk; j++)
                    Assert.True(inside[j] == mask.IsVisible(h, hq, i, j, tq, tk), $"{mask}: head {h}, query {i}, key {j}: interval says {inside[j]}");
            }
    }

    [Fact]
    public void VisibleIntervalsExhaustiveOverSmallDescriptors()
    {
        var bounds = new int[2 * AttentionMask.MaxIntervals];
        int checkedMasks = 0;
        for (int prefix = 0; prefix <= 2; prefix++)
            for (int window = 0; window <= 4; window++)
                for (int sinks = 0; sinks <= (window > 0 ? 2 : 0); sinks++)
                    for (int group = 0; group <= 3; group++)
                        foreach (bool causal in new[] { false, true })
                            foreach (bool shift in group >= 2 ? new[] { false, true } : new[] { false })
                                foreach (var (tq, tk) in new[] { (7, 7 + prefix), (3, 8 + prefix), (1, 5 + prefix) })
                                {
                                    var mask = new AttentionMask { PrefixLength = prefix, Window = window, Sinks = sinks, GroupSize = group, Causal = causal, ShiftUpperHalfHeads = shift };
                                    mask.Validate("test", tq, tk);
                                    checkedMasks++;
                                    var dense = DenseMasks.Build(mask, 2, tq, tk);
                                    for (int h = 0; h < 2; h++)
                                        for (int i = 0; i < tq; i++)
                                        {
                                            int count = mask.VisibleIntervals(h, 2, i, tq, tk, bounds);
                                            for (int j = 0; j < tk; j++)
                                            {
                                                bool inside = false;
                                                for (int t = 0; t < count; t++) inside |= j >= bounds[2 * t] && j < bounds[2 * t + 1];
                                                Assert.True(inside == dense[h, i, j], $"{mask} Tq={tq} Tk={tk}: head {h}, query {i}, key {j}");
                                                Assert.True(inside == mask.IsVisible(h, 2, i, j, tq, tk), $"{mask} IsVisible Tq={tq} Tk={tk}: head {h}, query {i}, key {j}");
                                            }
                                        }
                                }
        Assert.True(checkedMasks > 300);
    }

    [Fact]
    public void StepExpansionIntervalsExhaustiveOverSmallDescriptors()
    {
        // Every combination of prefix, memory count, stride, window, memory-causal and a window spanning the prefix.
        var bounds = new int[2 * AttentionMask.MaxIntervals];
        int checkedMasks = 0;
        for (int prefix = 0; prefix <= 3; prefix++)
            for (int memory = 1; memory <= 3; memory++)
                for (int stride = 1; stride <= 3; stride++)
                    for (int window = 0; window <= 3; window++)
                        foreach (bool memoryCausal in new[] { false, true })
                            foreach (bool spans in window > 0 ? new[] { false, true } : new[] { false })
                                for (int ordinary = 0; ordinary <= 4; ordinary++)
                                {
                                    var mask = AttentionMask.StepExpansion(memory, stride, prefix, window, memoryCausal, spans);
                                    int tq = ordinary + memory, tk = tq + prefix;
                                    mask.Validate("test", tq, tk);
                                    checkedMasks++;
                                    var dense = DenseMasks.Build(mask, 1, tq, tk);
                                    for (int i = 0; i < tq; i++)
                                    {
                                        int count = mask.VisibleIntervals(0, 1, i, tq, tk, bounds);
                                        for (int t = 1; t < count; t++) Assert.True(bounds[2 * t] > bounds[2 * t - 1], $"{mask}: query {i}: intervals touch");
                                        for (int j = 0; j < tk; j++)
                                        {
                                            bool inside = false;
                                            for (int t = 0; t < count; t++) inside |= j >= bounds[2 * t] && j < bounds[2 * t + 1];
                                            Assert.True(inside == dense[0, i, j], $"{mask} Tq={tq} Tk={tk}: query {i}, key {j}");
                                            Assert.True(inside == mask.IsVisible(0, 1, i, j, tq, tk), $"{mask} IsVisible Tq={tq} Tk={tk}: query {i}, key {j}");
                                        }
                                    }
                                }
        Assert.True(checkedMasks > 1000);
    }

    [Fact]
    public void AWindowSpanningThePrefixLimitsOnlyTheOrdinaryQueries()
    {
        // Prefix 4, 3 ordinary, 2 memory, window 2: ordinary query 0 (position 4) sees prefix key 3 and itself; query 1
        // only ordinary keys; the memory queries see the whole prefix.
        var mask = AttentionMask.StepExpansion(2, 2, 4, window: 2, memoryCausal: true, windowSpansPrefix: true);
        int tq = 5, tk = 9;
        bool[] Row(int i) => [.. Enumerable.Range(0, tk).Select(j => mask.IsVisible(0, 1, i, j, tq, tk))];
        Assert.Equal(new[] { false, false, false, true, true, false, false, false, false }, Row(0));
        Assert.Equal(new[] { false, false, false, false, true, true, false, false, false }, Row(1));
        Assert.Equal(new[] { false, false, false, false, false, true, true, false, false }, Row(2));
        Assert.Equal(new[] { true, true, true, true, true, true, false, true, false }, Row(3));
        Assert.Equal(new[] { true, true, true, true, true, true, true, true, true }, Row(4));
        // Without the flag the prefix is seen by every query.
        var plain = mask with { WindowSpansPrefix = false };
        Assert.True(plain.IsVisible(0, 1, 2, 0, tq, tk));
    }

    [Fact]
    public void ValidateRejectsDescriptorsThatDoNotFit()
    {
        Assert.Throws<ArgumentException>(() => AttentionMask.CausalMask(10).Validate("op", 2, 5));
        Assert.Throws<ArgumentException>(() => new AttentionMask { Sinks = 2 }.Validate("op", 4, 4));
        Assert.Throws<ArgumentException>(() => AttentionMask.CausalMask(2).Validate("op", 5, 6));
        Assert.Throws<ArgumentException>(() => AttentionMask.StepExpansion(3, 0).Validate("op", 6, 6));
        Assert.Throws<ArgumentException>(() => AttentionMask.StepExpansion(3, 2).Validate("op", 5, 6));
        Assert.Throws<ArgumentException>(() => new AttentionMask { MemoryCausal = true, Causal = true }.Validate("op", 6, 6));
        Assert.Throws<ArgumentException>(() => (AttentionMask.StepExpansion(3, 2) with { Causal = true }).Validate("op", 6, 6));
        Assert.Throws<ArgumentException>(() => AttentionMask.StepExpansion(3, 2, 2, windowSpansPrefix: true).Validate("op", 6, 8));
        Assert.Throws<ArgumentException>(() => new AttentionMask { WindowSpansPrefix = true, Window = 2, Causal = true }.Validate("op", 6, 6));
        Assert.Throws<ArgumentException>(() => AttentionMask.BlockDiagonal(1, shiftUpperHalfHeads: true).Validate("op", 6, 6));
        var e = Assert.Throws<ArgumentException>(() => new AttentionMask { Window = -1 }.Validate("Attention", 4, 4));
        Assert.Equal("mask", e.ParamName);
        Assert.Contains("Attention", e.Message);
        AttentionMask.None.Validate("op", 9, 3);   // no positional rule: any Tq is fine
    }

    [Fact]
    public void VisibleIntervalsNeedsRoomForThreeIntervals()
    {
        Assert.Throws<ArgumentException>(() => AttentionMask.None.VisibleIntervals(0, 1, 0, 1, 1, new int[4]));
    }
}
