using UioLlm.Model.Modules;
using UioLlm.Kernels;

namespace UioLlm.Model.Methods;

/// <summary>
/// Full attention over the whole stream: every token is kept and every key sits at its stream position. With
/// the model's own RoPE this is the base model extrapolating past its window (<see cref="ILongContextSession.OutOfTrainedRange"/>
/// says when); with a scaled table it is Position Interpolation, NTK-aware, dynamic NTK, YaRN, a raised base
/// (ABF) or truncated RoPE (<see cref="RopeScalingMethods"/>). Keys are stored un-rotated and rotated with the
/// table of each step, so a table that depends on the length (dynamic NTK) applies to every key.
/// </summary>
public sealed class FullAttentionSession : KvStreamSession
{
    private readonly Func<long, RopeTable> table;
    private readonly long range;

    /// <param name="table">The RoPE table for a stream of the given length; null: the model's own.</param>
    /// <param name="trainedRange">Distances up to which the table is meant to work (default: the trained window).</param>
    /// <param name="chunk">Most tokens per step.</param>
    public FullAttentionSession(LlamaModel model, Func<long, RopeTable>? table = null, long trainedRange = 0, int chunk = 256)
        : base(model, model.Config.MaxSeqLen)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunk, 1);
        this.table = table ?? (_ => model.Rope);
        range = trainedRange > 0 ? trainedRange : model.Config.MaxSeqLen;
        Chunk = chunk;
    }

    public int Chunk { get; }

    public override long TrainedRange => range;

    protected override RopeTable TableFor(long streamLength) => table(streamLength);

    protected override int Prepare(int remaining) => Math.Min(remaining, Chunk);
}
