using UioLlm.Model.Modules;
namespace UioLlm.Model.Methods;

/// <summary>
/// The base model alone, with its own window: it reads the stream through the last <see cref="Window"/>
/// tokens at positions 0..Window-1. When the window is full the last <see cref="Keep"/> tokens are re-read
/// from position 0 (a sliding window with re-computation, done in strides so each token costs a bounded
/// number of passes) and everything older is forgotten. Every query sees at least Keep earlier tokens once
/// the stream is that long, and no position ever leaves the window.
/// </summary>
public sealed class BaseWindowSession : KvStreamSession
{
    public BaseWindowSession(LlamaModel model, int window = 0, int keep = -1) : base(model, window > 0 ? window : model.Config.MaxSeqLen)
    {
        Window = window > 0 ? window : model.Config.MaxSeqLen;
        Keep = keep >= 0 ? keep : Window / 2;
        if (Keep >= Window)
            throw new ArgumentOutOfRangeException(nameof(keep), $"BaseWindowSession: keep ({Keep}) must be smaller than the window ({Window})");
    }

    /// <summary>Most tokens read at once.</summary>
    public int Window { get; }

    /// <summary>Tokens re-read when the window slides.</summary>
    public int Keep { get; }

    public override long TrainedRange => Config.MaxSeqLen;

    protected override int Prepare(int remaining)
    {
        if (Length == Window)
        {
            var tokens = new int[Keep];
            var positions = new int[Keep];
            for (int i = 0; i < Keep; i++)
            {
                tokens[i] = RowToken(Length - Keep + i);
                positions[i] = RowPosition(Length - Keep + i);
            }
            ClearRows();
            if (Keep > 0) Replay(tokens, positions);
        }
        return Math.Min(remaining, Window - Length);
    }
}
