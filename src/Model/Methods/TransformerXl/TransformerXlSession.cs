using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods;

/// <summary>
/// A trained <see cref="TransformerXlModel"/> reading a stream of any length at inference: the segment recurrence of
/// <see cref="RecurrenceSession"/> (each segment attends to the previous one's keys and values as they were computed,
/// positions continuing) with the model's current LoRA on q and v. Its log-probabilities are those of
/// <see cref="TransformerXlModel.Segment"/> over the same segments.
/// </summary>
public sealed class TransformerXlSession(TransformerXlModel model) : RecurrenceSession(Checked(model).Base, model.Config.SegmentLength)
{
    private readonly TransformerXlModel model = model;

    protected override Var Project(Tape tape, int layer, Linear projection, Var x) => model.Lora.Project(tape, layer, projection, x);

    private static TransformerXlModel Checked(TransformerXlModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model;
    }
}
