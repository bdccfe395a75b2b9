using UioLlm.Kernels;

namespace UioLlm.Model.Autograd;

/// <summary>Misuse of a tape: backpropagating twice, using it after it was freed, seeding the wrong value.</summary>
public sealed class TapeException(string message) : InvalidOperationException(message);

/// <summary>
/// Records, per op, the closure that calls that op's backward kernels, and owns every tensor its ops
/// allocate (values, saved statistics, gradients of non-leaves). Several tapes may be alive at once: each
/// encoder segment of UIO records on its own tape, which is backpropagated once (with a seed) and freed.
/// </summary>
/// <remarks>
/// Ops whose inputs need no gradient are run but not recorded, so a frozen model under a tape costs no
/// graph memory; <see cref="NoGrad"/> turns recording off entirely (inference uses a tape as an arena).
/// </remarks>
public sealed partial class Tape : IDisposable
{
    private readonly List<Node> nodes = [];
    private readonly List<Tensor> owned = [];
    private readonly List<Tensor> grads = [];
    private long bytesHeld;
    private readonly List<Var> produced = [];
    private int noGradDepth;
    private State state = State.Recording;

    private enum State { Recording, Backpropagated, Freed }

    private readonly record struct Node(string Op, Var[] Outputs, Action Backward);

    public Tape(Accelerator accelerator, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        Accelerator = accelerator;
        Name = name ?? "tape";
    }

    public Accelerator Accelerator { get; }
    public string Name { get; }
    internal IKernels K => Accelerator.Kernels;

    /// <summary>Ops recorded so far (ops that needed no gradient are not counted).</summary>
    public int RecordedOps => nodes.Count;

    /// <summary>Tensors this tape currently holds (returned to the pool by <see cref="Dispose"/>).</summary>
    public int OwnedTensors => owned.Count + grads.Count;

    /// <summary>Bytes of the tensors this tape currently holds (values, saved statistics, gradients).</summary>
    public long BytesHeld => bytesHeld;

    public bool IsFreed => state == State.Freed;

    /// <summary>True while ops record their backward (not inside <see cref="NoGrad"/>).</summary>
    public bool IsRecording => noGradDepth == 0 && state == State.Recording;

    /// <summary>Within the returned scope ops run without recording; scopes nest.</summary>
    public NoGradScope NoGrad()
    {
        ThrowIfUnusable("NoGrad");
        noGradDepth++;
        return new NoGradScope(this);
    }

    public readonly struct NoGradScope : IDisposable
    {
        private readonly Tape tape;
        internal NoGradScope(Tape tape) => this.tape = tape;
        public void Dispose() => tape.noGradDepth--;
    }

    /// <summary>Backpropagates from a scalar loss (seed 1) recorded on this tape.</summary>
    public void Backward(Var loss)
    {
        ArgumentNullException.ThrowIfNull(loss);
        if (loss.Value.Length != 1)
            throw new ArgumentException($"Backward: loss {loss} must hold one element; use Backward(outputs, seeds) for other values", nameof(loss));
        using var seed = Accelerator.Scratch.Rent([1]);
        K.Fill(seed, 1f);
        Backward([loss], [seed]);
    }

    /// <summary>
    /// Backpropagates from several outputs of this tape at once: each output's gradient is seeded with
    /// (adds) the given tensor, then every recorded op runs its backward in reverse order. Leaves
    /// accumulate. A tape runs backward once.
    /// </summary>
    public void Backward(IReadOnlyList<Var> outputs, IReadOnlyList<Tensor> seeds) => Backward(outputs, seeds, retainGraph: false);

    /// <summary>
    /// As <see cref="Backward(IReadOnlyList{Var}, IReadOnlyList{Tensor})"/>; with <paramref name="retainGraph"/>
    /// the graph stays usable for another backward (the gradients of its inner values are cleared after each
    /// run, leaves keep accumulating). Naive truncated BPTT backpropagates each encoder graph this way S times.
    /// </summary>
    public void Backward(IReadOnlyList<Var> outputs, IReadOnlyList<Tensor> seeds, bool retainGraph)
    {
        ArgumentNullException.ThrowIfNull(outputs);
        ArgumentNullException.ThrowIfNull(seeds);
        ThrowIfUnusable("Backward");
        if (outputs.Count != seeds.Count)
            throw new ArgumentException($"Backward on {Name}: {outputs.Count} outputs but {seeds.Count} seeds");
        for (int i = 0; i < outputs.Count; i++)
        {
            var output = outputs[i];
            if (output.Producer != this)
                throw new TapeException($"Backward on {Name}: output {output} was not recorded on this tape");
            Guard.SameShape("Backward", seeds[i], "seed", output.Value, output.Name ?? "output");
            var g = output.GradForAccumulate();
            if (g is not null) K.Axpy(1f, seeds[i], g);
        }
        for (int n = nodes.Count - 1; n >= 0; n--)
        {
            var node = nodes[n];
            // An op runs its backward only when a gradient reached one of its outputs.
            bool reached = false;
            foreach (var o in node.Outputs) reached |= o.Grad is not null;
            if (reached) node.Backward();
        }
        if (retainGraph)
        {
            // Clear the inner gradients so the next backward starts from zero.
            foreach (var v in produced) v.DropTapeGrad();
            foreach (var g in grads)
            {
                bytesHeld -= 4L * g.Length;
                g.Dispose();
            }
            grads.Clear();
        }
        else
        {
            state = State.Backpropagated;
        }
    }

    /// <summary>Returns every tensor the tape allocated to the pool; its values can no longer be read.</summary>
    public void Dispose()
    {
        if (state == State.Freed) return;
        foreach (var t in owned) t.Dispose();
        owned.Clear();
        foreach (var g in grads) g.Dispose();
        grads.Clear();
        bytesHeld = 0;
        foreach (var v in produced) v.DropTapeGrad();
        produced.Clear();
        nodes.Clear();
        state = State.Freed;
    }

    // ------------------------------------------------------------------ helpers for ops

    /// <summary>A tensor owned by this tape (contents undefined).</summary>
    internal Tensor Rent(ReadOnlySpan<int> shape, string? name = null)
    {
        if (state == State.Freed) throw new TapeException($"{Name} was freed; it cannot allocate");
        var t = Accelerator.Scratch.Rent(shape, clear: false, name);
        owned.Add(t);
        bytesHeld += 4L * t.Length;
        return t;
    }

    /// <summary>A zeroed gradient buffer for one of this tape's values (cleared by a retained backward).</summary>
    internal Tensor RentGradient(ReadOnlySpan<int> shape, string? name = null)
    {
        if (state == State.Freed) throw new TapeException($"{Name} was freed; it cannot allocate");
        var t = Accelerator.Scratch.Rent(shape, clear: false, name);
        K.Fill(t, 0f);
        grads.Add(t);
        bytesHeld += 4L * t.Length;
        return t;
    }

    /// <summary>Wraps an op's output; it requires a gradient when any input does and the tape records.</summary>
    internal Var Output(Tensor value, bool requiresGrad, string? name = null)
    {
        var v = Var.Produced(value, requiresGrad, this, name);
        produced.Add(v);
        return v;
    }

    /// <summary>True when the op over these inputs must be recorded.</summary>
    internal bool NeedsGrad(Var a) => IsRecording && a.RequiresGrad;
    internal bool NeedsGrad(Var a, Var b) => IsRecording && (a.RequiresGrad || b.RequiresGrad);
    internal bool NeedsGrad(Var a, Var b, Var c) => IsRecording && (a.RequiresGrad || b.RequiresGrad || c.RequiresGrad);

    internal void Record(string op, Var output, Action backward) => nodes.Add(new Node(op, [output], backward));

    /// <summary>Called by every op before it runs: ops are only added to a live tape that has not run backward.</summary>
    internal void BeginOp(string op) => ThrowIfUnusable(op);

    internal void ThrowIfFreed(Var v)
    {
        if (state == State.Freed)
            throw new TapeException($"{v} belongs to {Name}, which was freed; detach values you keep (DetachAsLeaf) before freeing the tape");
    }

    private void ThrowIfUnusable(string what)
    {
        if (state == State.Freed) throw new TapeException($"{what} on {Name}: the tape was freed");
        if (state == State.Backpropagated) throw new TapeException($"{what} on {Name}: the tape has already run backward; each tape runs backward once (record a new tape)");
    }
}
