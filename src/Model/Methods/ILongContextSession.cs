using UioLlm.Model.Generation;

namespace UioLlm.Model.Methods;

/// <summary>
/// One long-context method at inference, reading a stream of any length: the single interface the
/// evaluation harness and the command line use for every method (base window, full attention, RoPE
/// scaling, StreamingLLM, LM-Infinite, segment recurrence, kNN attention, UIO memory, ...). A session is one
/// stream; make a new one for a new document (see <see cref="MethodRegistry"/>).
/// </summary>
public interface ILongContextSession : IDisposable
{
    /// <summary>
    /// Feeds tokens (any number, in any pieces) and returns, for each, the log-probability the method gave it
    /// from everything before it in the stream (NaN for the very first token of the session, which has no context).
    /// </summary>
    double[] Feed(ReadOnlySpan<int> tokens);

    /// <summary>Feeds a prompt when only the logits after it are needed (may skip work <see cref="Feed"/> does).</summary>
    void Prefill(ReadOnlySpan<int> tokens);

    /// <summary>Logits [vocab] after the last token fed; empty before any.</summary>
    ReadOnlySpan<float> LastLogits { get; }

    /// <summary>Tokens fed so far (generated tokens included).</summary>
    long TokensSeen { get; }

    /// <summary>Bytes of keys and values (or memory) the method attends to now, all layers.</summary>
    long KvBytes { get; }

    /// <summary>
    /// True once some query has read a key farther away than the method's trained range (e.g. full attention
    /// past the base's trained window, Position Interpolation past factor x window): its numbers are then an
    /// extrapolation and the harness marks them. Methods that stay inside by construction never set it.
    /// </summary>
    bool OutOfTrainedRange { get; }

    /// <summary>Generates after what was fed (greedy or sampled), feeding each new token back.</summary>
    GenerationResult Generate(GenerationOptions? options = null, Action<int>? onToken = null, CancellationToken cancellation = default)
        => SessionGeneration.Generate(this, options, onToken, cancellation);
}

/// <summary>
/// Generation over any <see cref="ILongContextSession"/>: sample from the last logits, feed the token back (every
/// generated token is fed, so the session can go on). Stop tokens: <see cref="GenerationOptions.StopTokens"/>, none when null.
/// </summary>
public static class SessionGeneration
{
    public static GenerationResult Generate(ILongContextSession session, GenerationOptions? options = null, Action<int>? onToken = null,
        CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(session);
        options ??= new GenerationOptions();
        if (session.LastLogits.IsEmpty) throw new InvalidOperationException($"{session.GetType().Name}.Generate: feed a prompt first (at least BOS)");
        var sampler = new Sampler(options.Temperature, options.TopP, options.Seed);
        var stops = options.StopTokens ?? [];
        var generated = new List<int>();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var reason = StopReason.TokenLimit;
        while (generated.Count < options.MaxNewTokens)
        {
            if (cancellation.IsCancellationRequested) { reason = StopReason.Cancelled; break; }
            int next = sampler.Sample(session.LastLogits);
            if (stops.Contains(next)) { reason = StopReason.StopToken; break; }
            generated.Add(next);
            onToken?.Invoke(next);
            session.Prefill([next]);
        }
        return new GenerationResult([.. generated], reason, 0, TimeSpan.Zero, clock.Elapsed);
    }
}
