using UioLlm.Model.Autograd;
using UioLlm.Model.Uio;

namespace UioLlm.Training.Estimators;

/// <summary>
/// The segment loop all four estimators share (UIO.md section 2): for t = 0..T-1 the decoder loss J_t is
/// computed on segment t after the detached memories m~_0..m~_{t-1} and backpropagated (transfer-head
/// gradients land directly; memory gradients collect in the m~ leaves); then segment t is encoded on its
/// own tape (its graph) and detached. The estimators differ only in which graphs they keep and when they
/// push the collected memory gradients through them.
/// </summary>
public abstract class SegmentLoop : IGradientEstimator
{
    /// <summary>One segment's encoder graph: its tape, its memory on that tape, and the detached leaves the decoder reads.</summary>
    protected sealed class EncoderGraph(int segment, Tape tape, Memory memory, Memory leaves)
    {
        public int Segment { get; } = segment;
        public Tape Tape { get; } = tape;
        public Memory Memory { get; } = memory;
        public Memory Leaves { get; } = leaves;
        public bool Alive => !Tape.IsFreed;
    }

    /// <summary>A target that is not scored.</summary>
    public const int IgnoreTarget = -100;

    private readonly List<EncoderGraph> graphs = [];
    private UioModel? model;

    public abstract string Name { get; }

    public EstimatorCounters Counters { get; } = new();

    /// <summary>Every segment's graph so far (freed ones keep their leaves: the decoder still reads them).</summary>
    protected IReadOnlyList<EncoderGraph> Graphs => graphs;

    protected UioModel Model => model ?? throw new InvalidOperationException("no document is being processed");

    /// <summary>Whether segment t's decoder ran (false: nothing in it was scored, so J_t = 0 sent no gradient).</summary>
    protected bool DecoderRan { get; private set; }

    public EstimateResult Accumulate(UioModel uio, ReadOnlySpan<int> document) =>
        Accumulate(uio, document, document.IsEmpty ? document : document[1..]);

    public EstimateResult Accumulate(UioModel uio, ReadOnlySpan<int> document, ReadOnlySpan<int> targets)
    {
        ArgumentNullException.ThrowIfNull(uio);
        if (!document.IsEmpty && targets.Length != document.Length - 1)
            throw new ArgumentException($"{Name}: {targets.Length} targets for a document of {document.Length} tokens; expected {document.Length - 1}", nameof(targets));
        int l = uio.Config.SegmentLength;
        int segments = (document.Length - 1) / l;
        if (segments < 1)
            throw new ArgumentException($"{Name}: a document of {document.Length} tokens has no whole segment of {l} tokens plus a target", nameof(document));
        model = uio;
        double total = 0;
        int scored = 0, scoredSegments = 0;
        try
        {
            BeginDocument(segments);
            for (int t = 0; t < segments; t++)
            {
                var tokens = document.Slice(t * l, l);
                var segmentTargets = targets.Slice(t * l, l);
                int before = scored;
                foreach (int target in segmentTargets)
                    if (target != IgnoreTarget) scored++;
                if (scored > before) scoredSegments++;
                // A segment with nothing scored has J_t = 0 and no gradient: its decoder pass is skipped
                // (the hooks still run, so estimators see every t).
                DecoderRan = scored > before;
                if (DecoderRan) total += DecoderStep(t, tokens, segmentTargets);
                else BeforeDecoderBackward(t);
                AfterDecoder(t);
                if (t + 1 == segments) break; // nothing reads the last segment's memory: it is not encoded
                Encode(t, tokens);
                AfterEncoder(t);
            }
            EndDocument();
        }
        finally
        {
            foreach (var g in graphs)
            {
                g.Tape.Dispose();
                g.Leaves.DisposeLeaves();
            }
            graphs.Clear();
            model = null;
        }
        return new EstimateResult(total, segments, scored, scoredSegments);
    }

    /// <summary>J_t on its own tape: forward, backward, free. Returns the loss.</summary>
    private double DecoderStep(int t, ReadOnlySpan<int> tokens, ReadOnlySpan<int> targets)
    {
        BeforeDecoderBackward(t);
        using var tape = new Tape(Model.Accelerator, $"decoder {t}");
        var loss = Model.DecoderLoss(tape, tokens, targets, graphs.Select(g => g.Leaves).ToArray());
        Counters.DecoderForwards++;
        double value = loss.Value.ToArray()[0];
        tape.Backward(loss);
        return value;
    }

    private void Encode(int t, ReadOnlySpan<int> tokens)
    {
        var tape = new Tape(Model.Accelerator, $"encoder {t}");
        var memory = Model.Compress(tape, tokens);
        Counters.EncoderForwards++;
        graphs.Add(new EncoderGraph(t, tape, memory, memory.Detach()));
        TrackLive();
    }

    /// <summary>Pushes the gradient collected in a graph's leaves through its encoder tape and frees the tape.</summary>
    protected void Flush(EncoderGraph graph)
    {
        if (!graph.Alive) return;
        BackwardThrough(graph, retain: false);
        graph.Tape.Dispose();
    }

    /// <summary>Backpropagates the graph with its leaves' current gradients as seeds (skipped when none arrived).</summary>
    protected void BackwardThrough(EncoderGraph graph, bool retain)
    {
        var outputs = new List<Var>();
        var seeds = new List<UioLlm.Kernels.Tensor>();
        for (int layer = 0; layer < graph.Leaves.States.Count; layer++)
        {
            if (graph.Leaves.States[layer].Grad is not { } g) continue;
            outputs.Add(graph.Memory.States[layer]);
            seeds.Add(g);
        }
        if (outputs.Count == 0) return;
        graph.Tape.Backward(outputs, seeds, retain);
        Counters.EncoderBackwards++;
    }

    /// <summary>Frees a graph without a backward (its gradient is zero or is being discarded).</summary>
    protected static void Drop(EncoderGraph graph) => graph.Tape.Dispose();

    /// <summary>Zeroes the leaves' gradients of a graph (discarding what the last decoder backward put there).</summary>
    protected static void ClearLeafGradients(EncoderGraph graph)
    {
        foreach (var leaf in graph.Leaves.States)
            if (leaf.Grad is not null) leaf.ZeroGrad();
    }

    private void TrackLive()
    {
        int live = 0;
        long bytes = 0;
        foreach (var g in graphs)
            if (g.Alive) { live++; bytes += g.Tape.BytesHeld; }
        Counters.PeakLiveGraphs = Math.Max(Counters.PeakLiveGraphs, live);
        Counters.PeakTapeBytes = Math.Max(Counters.PeakTapeBytes, bytes);
    }

    /// <summary>Called before anything else of a document with its segment count T.</summary>
    protected virtual void BeginDocument(int segments) { }

    /// <summary>Called just before J_t's backward.</summary>
    protected virtual void BeforeDecoderBackward(int t) { }

    /// <summary>Called after J_t's backward (the leaves of earlier segments hold what J_t added).</summary>
    protected virtual void AfterDecoder(int t) { }

    /// <summary>Called after segment t's graph was added (Graphs[t]); never for the document's last segment, which is not encoded.</summary>
    protected virtual void AfterEncoder(int t) { }

    /// <summary>Called after the last segment's decoder step: flush what is left (every graph present is read by a later J_t).</summary>
    protected virtual void EndDocument() { }

    /// <summary>Peak-tracking hook for estimators that change the live set.</summary>
    protected void NoteLive() => TrackLive();
}

/// <summary>(a) Full BPTT: every graph kept; each backpropagated once at the end with everything it collected.</summary>
public sealed class FullBptt : SegmentLoop
{
    public override string Name => "full BPTT";

    protected override void EndDocument()
    {
        foreach (var g in Graphs) Flush(g);
    }
}

/// <summary>
/// (b) Truncated BPTT, naive form: each J_t is backpropagated through the S most recent encoder graphs
/// right away (S encoder backwards per step, graphs retained for reuse): O(T*S) time, S graphs alive. Biased.
/// </summary>
public sealed class TruncatedBptt(int window) : SegmentLoop
{
    public int Window { get; } = window >= 1 ? window : throw new ArgumentOutOfRangeException(nameof(window), $"window S must be >= 1, got {window}");

    public override string Name => $"truncated BPTT (S={Window})";

    protected override void AfterDecoder(int t)
    {
        foreach (var g in Graphs)
        {
            // J_t's memory gradient reaches every earlier leaf; only the window's graphs take it.
            if (DecoderRan && g.Alive && g.Segment >= t - Window) BackwardThrough(g, retain: true);
            ClearLeafGradients(g);
        }
        // The graph leaving the window will never be used again.
        if (t - Window >= 0 && Graphs[t - Window].Alive) Drop(Graphs[t - Window]);
    }
}

/// <summary>
/// (c) Incremental TBPTT: the same gradient as (b), but each graph collects sum_{t=s+1}^{s+S} dJ_t/dm_s in
/// its leaves and is backpropagated exactly once, when it leaves the window: O(T), at most S+1 graphs alive.
/// </summary>
public sealed class IncrementalTbptt(int window) : SegmentLoop
{
    public int Window { get; } = window >= 1 ? window : throw new ArgumentOutOfRangeException(nameof(window), $"window S must be >= 1, got {window}");

    public override string Name => $"incremental TBPTT (S={Window})";

    protected override void AfterDecoder(int t)
    {
        // Contributions to memories already outside the window are discarded.
        foreach (var g in Graphs)
            if (!g.Alive) ClearLeafGradients(g);
        // Segment t - S has now received J_{t-S+1} .. J_t: its last in-window contribution.
        if (t - Window >= 0) Flush(Graphs[t - Window]);
    }

    protected override void EndDocument()
    {
        foreach (var g in Graphs) Flush(g);   // (graphs already flushed are skipped)
    }
}

/// <summary>
/// (d) UIO's unbiased incremental estimator: the live graphs form a reservoir of size S kept with Vitter's
/// Algorithm R, so at step t each earlier segment is live with probability p_t = min(1, S/t); the new
/// memory-gradient contribution of J_t is multiplied by c_t = max(1, t/S) = 1/p_t, which makes the
/// estimate's expectation the exact gradient. Each graph is still backpropagated once: O(T).
/// </summary>
public sealed class UnbiasedIncremental : SegmentLoop
{
    private readonly Random rng;
    private readonly List<EncoderGraph> reservoir = [];
    private readonly Dictionary<int, UioLlm.Kernels.Tensor[]> stashed = [];

    public UnbiasedIncremental(int reservoirSize, int seed, bool compensate = true)
    {
        ReservoirSize = reservoirSize >= 1 ? reservoirSize : throw new ArgumentOutOfRangeException(nameof(reservoirSize), $"reservoir size S must be >= 1, got {reservoirSize}");
        Compensate = compensate;
        rng = new Random(seed);
    }

    public int ReservoirSize { get; }

    /// <summary>Whether the compensation factor is applied (the public reference code omits it).</summary>
    public bool Compensate { get; }

    public override string Name => $"unbiased incremental (S={ReservoirSize}{(Compensate ? "" : ", no compensation")})";

    protected override void BeginDocument(int segments) => reservoir.Clear();

    protected override void BeforeDecoderBackward(int t)
    {
        // old_s = m~_s.grad; m~_s.grad = 0 for the live segments, so J_t's contribution can be scaled alone.
        stashed.Clear();
        if (!Compensate) return;
        foreach (var g in reservoir)
        {
            var copies = new UioLlm.Kernels.Tensor[g.Leaves.States.Count];
            for (int layer = 0; layer < copies.Length; layer++)
            {
                var leaf = g.Leaves.States[layer];
                if (leaf.Grad is not { } grad) continue;
                copies[layer] = Model.Accelerator.Scratch.Rent(grad.Shape);
                Model.Accelerator.Kernels.Copy(grad, copies[layer]);
                leaf.ZeroGrad();
            }
            stashed[g.Segment] = copies;
        }
    }

    protected override void AfterDecoder(int t)
    {
        foreach (var g in Graphs)
            if (!g.Alive) ClearLeafGradients(g);
        if (!Compensate) return;
        // m~_s.grad = c_t * (J_t's contribution) + old_s.
        float factor = (float)Math.Max(1.0, (double)t / ReservoirSize);
        var kernels = Model.Accelerator.Kernels;
        foreach (var g in reservoir)
        {
            var copies = stashed[g.Segment];
            for (int layer = 0; layer < copies.Length; layer++)
            {
                var leaf = g.Leaves.States[layer];
                if (leaf.Grad is { } grad && factor != 1f) kernels.Scale(grad, factor, grad);
                if (copies[layer] is { } old)
                {
                    if (leaf.Grad is null) leaf.ZeroGrad();
                    kernels.Axpy(1f, old, leaf.Grad!);
                    old.Dispose();
                }
            }
        }
        stashed.Clear();
    }

    protected override void AfterEncoder(int t)
    {
        var fresh = Graphs[t];
        if (t < ReservoirSize)
        {
            reservoir.Add(fresh);
            return;
        }
        // Algorithm R: the new segment replaces a uniformly chosen member with probability S/(t+1).
        int j = rng.Next(0, t + 1);
        if (j < ReservoirSize)
        {
            Flush(reservoir[j]);
            reservoir[j] = fresh;
        }
        else
        {
            Drop(fresh);   // its gradient is still zero
        }
        NoteLive();
    }

    protected override void EndDocument()
    {
        foreach (var g in reservoir) Flush(g);
        reservoir.Clear();
    }
}
