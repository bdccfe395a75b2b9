namespace UioLlm.Kernels;

/// <summary>
/// Which keys each query may attend to, as a small value (never a dense matrix). One descriptor serves
/// full attention, causal decoding over a memory prefix (UIO's decoder), StreamingLLM / LM-Infinite windows
/// with attention sinks, UIO's and Activation Beacon's step-expansion encoder pattern, and S2-Attn groups.
/// </summary>
/// <remarks>
/// Keys are indexed j = 0..Tk-1, queries i = 0..Tq-1. Queries are aligned bottom-right: query i sits at
/// key position qpos = Tk - Tq + i. Keys j &lt; <see cref="PrefixLength"/> (e.g. UIO memory K/V) are seen by
/// every query. The remaining rules use positions relative to the prefix: rq = qpos - P, rk = j - P.
/// <list type="bullet">
/// <item>Step expansion (<see cref="MemoryCount"/> = n &gt; 0, <see cref="StepStride"/> = c): the non-prefix
/// keys are [L ordinary ; n memory] with Tq = Tk - P. Ordinary query rq &lt; L sees ordinary rk &lt;= rq.
/// Memory query m = rq - L sees ordinary rk &lt; min((m + 1) * c, L) and itself, no other memory token; with
/// <see cref="MemoryCausal"/> (Activation Beacon) it also sees the memory tokens before it, 0 .. m - 1.
/// With a window W &gt; 0 (no sinks) the ordinary queries see only rq - rk &lt; W (a local base layer inside an
/// encoder); memory queries keep their whole span. With <see cref="WindowSpansPrefix"/> that window also covers the
/// prefix, counted as the positions right before the ordinary tokens: ordinary query rq sees prefix key j only when
/// qpos - j &lt; W (a local base layer over a memory prefix, <c>LlamaConfig.DecoderMask</c>; Activation Beacon's raw
/// tokens in a local layer); memory queries still see the whole prefix.</item>
/// <item>Causal: rk &lt;= rq.</item>
/// <item>Window W &gt; 0: rq - rk &lt; W, except the first <see cref="Sinks"/> non-prefix keys, always seen.</item>
/// <item>Groups G &gt; 0: rq and rk must fall in the same block of G positions; with
/// <see cref="ShiftUpperHalfHeads"/>, heads h &gt;= Hq/2 use blocks shifted by G/2 (S2-Attn, without wrap-around).</item>
/// </list>
/// </remarks>
public readonly record struct AttentionMask
{
    public int PrefixLength { get; init; }
    public bool Causal { get; init; }
    public int Window { get; init; }
    public int Sinks { get; init; }
    public int MemoryCount { get; init; }
    public int StepStride { get; init; }
    public int GroupSize { get; init; }
    public bool ShiftUpperHalfHeads { get; init; }
    /// <summary>Step expansion only: memory token m also sees the memory tokens 0 .. m - 1 (Activation Beacon's beacons).</summary>
    public bool MemoryCausal { get; init; }
    /// <summary>
    /// Step expansion with a window only: the ordinary queries' sliding window counts the prefix keys as the positions
    /// right before the ordinary tokens, so an ordinary query sees a prefix key only when it lies fewer than
    /// <see cref="Window"/> positions back (the rule of a local layer over a cache or memory prefix,
    /// <c>LlamaConfig.DecoderMask</c>); memory queries still see the whole prefix. False: the prefix is seen by every query.
    /// </summary>
    public bool WindowSpansPrefix { get; init; }

    /// <summary>Every query sees every key.</summary>
    public static AttentionMask None => default;

    /// <summary>Causal, bottom-right aligned, with an optional always-visible prefix (UIO decoder: the memory).</summary>
    public static AttentionMask CausalMask(int prefixLength = 0) => new() { Causal = true, PrefixLength = prefixLength };

    /// <summary>Causal sliding window of <paramref name="window"/> keys plus <paramref name="sinks"/> attention sinks.</summary>
    public static AttentionMask SlidingWindow(int window, int sinks = 0, int prefixLength = 0) =>
        new() { Causal = true, Window = window, Sinks = sinks, PrefixLength = prefixLength };

    /// <summary>
    /// UIO encoder / Activation Beacon: [L ordinary ; n memory], memory i sees the first (i+1)*stride ordinary
    /// tokens. A positive <paramref name="window"/> limits the ordinary tokens to a causal sliding window of that
    /// many tokens (a local base layer); the memory tokens still read their whole span.
    /// </summary>
    /// <param name="memoryCausal">Memory token i also sees memory tokens 0 .. i - 1 (Activation Beacon); UIO's encoder: false.</param>
    /// <param name="windowSpansPrefix">
    /// With a positive <paramref name="window"/>: the ordinary tokens' window also covers the prefix, so they see only
    /// the prefix keys fewer than <paramref name="window"/> positions back (<see cref="WindowSpansPrefix"/>); false: all of it.
    /// </param>
    public static AttentionMask StepExpansion(int memoryCount, int stride, int prefixLength = 0, int window = 0, bool memoryCausal = false,
        bool windowSpansPrefix = false) =>
        new()
        {
            MemoryCount = memoryCount, StepStride = stride, PrefixLength = prefixLength, Window = window, MemoryCausal = memoryCausal,
            WindowSpansPrefix = windowSpansPrefix,
        };

    /// <summary>Block-diagonal groups (S2-Attn), optionally causal and with upper-half heads shifted by G/2.</summary>
    public static AttentionMask BlockDiagonal(int groupSize, bool causal = true, bool shiftUpperHalfHeads = false) =>
        new() { GroupSize = groupSize, Causal = causal, ShiftUpperHalfHeads = shiftUpperHalfHeads };

    /// <summary>True when some rule depends on positions (anything beyond a prefix).</summary>
    public bool UsesPositions => Causal || Window > 0 || MemoryCount > 0 || GroupSize > 0;

    /// <summary>The reference rule: may query <paramref name="i"/> (of <paramref name="tq"/>) using head
    /// <paramref name="head"/> (of <paramref name="queryHeads"/>) see key <paramref name="j"/> (of <paramref name="tk"/>)?</summary>
    public bool IsVisible(int head, int queryHeads, int i, int j, int tq, int tk)
    {
        int p = PrefixLength;
        int rq = tk - tq + i - p;
        if (j < p) return !ClipsPrefix(rq, tq) || rq + p - j < Window;
        int rk = j - p;
        if (MemoryCount > 0)
        {
            int l = tq - MemoryCount;
            if (rq < l) return rk <= rq && (Window == 0 || rq - rk < Window);
            int m = rq - l;
            return rk == rq || rk < Math.Min((m + 1) * StepStride, l) || (MemoryCausal && rk >= l && rk < rq);
        }
        if (Causal && rk > rq) return false;
        if (Window > 0 && rq - rk >= Window && rk >= Sinks) return false;
        if (GroupSize > 0)
        {
            int shift = ShiftUpperHalfHeads && head >= queryHeads / 2 ? GroupSize / 2 : 0;
            if ((rq + shift) / GroupSize != (rk + shift) / GroupSize) return false;
        }
        return true;
    }

    /// <summary>True when query rq (relative to the prefix) sees the prefix only within its window (<see cref="WindowSpansPrefix"/>).</summary>
    private bool ClipsPrefix(int rq, int tq) => WindowSpansPrefix && MemoryCount > 0 && Window > 0 && rq < tq - MemoryCount;

    /// <summary>The most intervals <see cref="VisibleIntervals"/> can return (prefix, sinks or memory block, main band).</summary>
    public const int MaxIntervals = 3;

    /// <summary>
    /// The keys query <paramref name="i"/> (head <paramref name="head"/> of <paramref name="queryHeads"/>) sees, as
    /// sorted, disjoint, non-empty half-open intervals [start, end) written as pairs into <paramref name="bounds"/>
    /// (length &gt;= 2 * <see cref="MaxIntervals"/>); returns how many. Key j is inside an interval exactly when
    /// <see cref="IsVisible"/> says so, for any descriptor that passes <see cref="Validate"/>.
    /// </summary>
    public int VisibleIntervals(int head, int queryHeads, int i, int tq, int tk, Span<int> bounds)
    {
        if (bounds.Length < 2 * MaxIntervals)
            throw new ArgumentException($"VisibleIntervals: bounds has {bounds.Length} slots, expected at least {2 * MaxIntervals}", nameof(bounds));
        int p = PrefixLength;
        int count = 0;
        int rq = tk - tq + i - p;   // query position relative to the prefix
        // The prefix: all of it, or (window spanning the prefix, ordinary query) its last keys within the window.
        Append(bounds, ref count, ClipsPrefix(rq, tq) ? Math.Max(0, p + rq - Window + 1) : 0, Math.Min(p, tk));
        if (!UsesPositions)
        {
            Append(bounds, ref count, p, tk);
            return count;
        }
        int n = tk - p;             // non-prefix keys
        if (MemoryCount > 0)
        {
            int l = tq - MemoryCount;
            if (rq < l)
            {
                Append(bounds, ref count, Window > 0 ? p + Math.Max(0, rq - Window + 1) : p, p + rq + 1);
            }
            else
            {
                // Memory token m sees the first min((m+1)c, L) ordinary tokens, then itself (and, memory-causal,
                // the memory tokens before it).
                Append(bounds, ref count, p, p + Math.Min((rq - l + 1) * StepStride, l));
                Append(bounds, ref count, MemoryCausal ? p + l : p + rq, p + rq + 1);
            }
            return count;
        }
        int lo = 0, hi = n;
        if (Causal) hi = Math.Min(hi, rq + 1);
        if (GroupSize > 0)
        {
            int shift = ShiftUpperHalfHeads && head >= queryHeads / 2 ? GroupSize / 2 : 0;
            int start = (rq + shift) / GroupSize * GroupSize - shift;
            lo = Math.Max(lo, start);
            hi = Math.Min(hi, start + GroupSize);
        }
        if (Window > 0)
        {
            // Sinks [0, S) and the band of the last W positions, both clipped by the causal/group bounds.
            Append(bounds, ref count, p + lo, p + Math.Min(Sinks, hi));
            Append(bounds, ref count, p + Math.Max(lo, rq - Window + 1), p + hi);
        }
        else
        {
            Append(bounds, ref count, p + lo, p + hi);
        }
        return count;
    }

    /// <summary>Add [start, end) after the intervals already written, merging when it touches the last one.</summary>
    private static void Append(Span<int> bounds, ref int count, int start, int end)
    {
        if (end <= start) return;
        if (count > 0 && start <= bounds[2 * count - 1])
        {
            bounds[2 * count - 1] = Math.Max(bounds[2 * count - 1], end);
            return;
        }
        bounds[2 * count] = start;
        bounds[2 * count + 1] = end;
        count++;
    }

    /// <summary>Throw a clear ArgumentException when the descriptor does not fit the given sizes.</summary>
    public void Validate(string op, int tq, int tk)
    {
        if (PrefixLength < 0 || Window < 0 || Sinks < 0 || MemoryCount < 0 || StepStride < 0 || GroupSize < 0)
            throw new ArgumentException($"{op}: mask {this} has a negative field", "mask");
        if (PrefixLength > tk)
            throw new ArgumentException($"{op}: mask prefix {PrefixLength} is longer than the {tk} keys", "mask");
        if (Sinks > 0 && Window == 0)
            throw new ArgumentException($"{op}: mask has {Sinks} sinks but no window; sinks only apply to a sliding window", "mask");
        if (UsesPositions && tq > tk - PrefixLength)
            throw new ArgumentException($"{op}: {tq} queries but only {tk - PrefixLength} non-prefix keys; positional masks need Tq <= Tk - prefix", "mask");
        if (MemoryCount > 0)
        {
            if (StepStride <= 0)
                throw new ArgumentException($"{op}: step-expansion mask needs a positive stride, got {StepStride}", "mask");
            if (tq != tk - PrefixLength || MemoryCount > tq)
                throw new ArgumentException($"{op}: step-expansion mask with {MemoryCount} memory tokens needs Tq = Tk - prefix >= {MemoryCount}, got Tq={tq}, Tk={tk}, prefix={PrefixLength}", "mask");
            if (Causal || Sinks > 0 || GroupSize > 0)
                throw new ArgumentException($"{op}: step-expansion mask cannot be combined with causal/sink/group rules (it already implies its own; only a window for the ordinary tokens)", "mask");
        }
        if (MemoryCausal && MemoryCount == 0)
            throw new ArgumentException($"{op}: a memory-causal mask needs memory tokens (step expansion)", "mask");
        if (WindowSpansPrefix && (MemoryCount == 0 || Window == 0))
            throw new ArgumentException($"{op}: a window spanning the prefix needs a step-expansion mask with a window (memory tokens {MemoryCount}, window {Window})", "mask");
        if (ShiftUpperHalfHeads && GroupSize < 2)
            throw new ArgumentException($"{op}: shifted groups need a group size of at least 2, got {GroupSize}", "mask");
    }
}
