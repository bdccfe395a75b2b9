using UioLlm.Model.Modules;
namespace UioLlm.Model.Methods;

/// <summary>
/// Transformer-XL-style segment recurrence at inference: the stream is cut into segments of
/// <see cref="SegmentLength"/>; each layer of a segment attends to [the previous segment's keys and values,
/// exactly as they were computed when that segment was read (not recomputed) ; the segment so far], with
/// positions continuing from the cached segment into the current one (0..2l-1). Because the cached states were
/// themselves computed over their own previous segment, layer L reaches about L segments back (the
/// recurrence), while one pass never sees more than 2l tokens. The trained Transformer-XL
/// (<see cref="TransformerXlSession"/>) is this session with LoRA on the projections (<see cref="KvStreamSession.Project"/>).
/// </summary>
public class RecurrenceSession : KvStreamSession
{
    private int cached;   // rows of the previous segment at the front

    public RecurrenceSession(LlamaModel model, int segmentLength = 0) : base(model, 2 * (segmentLength > 0 ? segmentLength : model.Config.MaxSeqLen / 2))
    {
        SegmentLength = segmentLength > 0 ? segmentLength : Math.Max(1, model.Config.MaxSeqLen / 2);
    }

    public int SegmentLength { get; }

    /// <summary>Rows of the cached previous segment (0 during the first).</summary>
    public int CachedRows => cached;

    protected override int Prepare(int remaining)
    {
        if (Length - cached == SegmentLength)
        {
            // The current segment is complete: it becomes the cache, its predecessor is dropped.
            EvictRows(0, cached);
            cached = SegmentLength;
        }
        return Math.Min(remaining, SegmentLength - (Length - cached));
    }
}
