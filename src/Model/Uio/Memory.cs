using UioLlm.Model.Autograd;

namespace UioLlm.Model.Uio;

/// <summary>
/// The compressed form of one or more segments: for every layer, the memory tokens' self-attention inputs
/// (after that layer's input RMSNorm), [segments * n, d], segment after segment.
/// </summary>
public sealed class Memory
{
    public Memory(IReadOnlyList<Var> states, int segments, int tokensPerSegment)
    {
        ArgumentNullException.ThrowIfNull(states);
        if (states.Count == 0) throw new ArgumentException("Memory: no layers", nameof(states));
        foreach (var s in states)
            if (s.Value.Rank != 2 || s.Value.Dim(0) != segments * tokensPerSegment)
                throw new ArgumentException($"Memory: layer state {s} is not [{segments * tokensPerSegment}, d] ({segments} segments x {tokensPerSegment} tokens)", nameof(states));
        States = states;
        Segments = segments;
        TokensPerSegment = tokensPerSegment;
    }

    /// <summary>Per layer, [Segments * TokensPerSegment, d].</summary>
    public IReadOnlyList<Var> States { get; }
    public int Segments { get; }
    public int TokensPerSegment { get; }
    public int Tokens => Segments * TokensPerSegment;

    /// <summary>
    /// The m~ of UIO.md section 2: a copy of every layer's states as leaves cut from the encoder's graph,
    /// whose gradients accumulate across decoder steps (feed them back with the encoder tape's
    /// Backward(States, grads)). Free with <see cref="DisposeLeaves"/>.
    /// </summary>
    public Memory Detach(bool requiresGrad = true) =>
        new(States.Select(s => s.DetachAsLeaf(requiresGrad)).ToArray(), Segments, TokensPerSegment);

    /// <summary>Frees detached leaves (values and gradients).</summary>
    public void DisposeLeaves()
    {
        foreach (var s in States) s.DisposeLeaf();
    }
}
