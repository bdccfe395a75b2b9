using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Training.Optim;

namespace UioLlm.Training.Methods;

/// <summary>
/// One document's contribution to a training step: <paramref name="Loss"/> is a sum over <paramref name="Units"/>
/// units, each the mean cross-entropy of its scored tokens (UIO: a segment; a method without segments: the whole
/// document, Units = 1); the trainer divides the step's summed gradient and loss by the step's total units.
/// </summary>
/// <param name="Tokens">Tokens whose prediction was scored.</param>
public readonly record struct DocumentLoss(double Loss, int Units, int Tokens);

/// <summary>
/// A long-context method whose parameters <see cref="Trainer"/> fits on a frozen base model: UIO (its segment
/// loop and four estimators stay UIO's own), RMT, AutoCompressor, Activation Beacon, Transformer-XL, LongLoRA, ...
/// The trainer owns the optimizer, schedule, clipping, checkpoints, resumption, metrics and progress; the method
/// owns its forward and backward pass, its parameters and its adapter files.
/// </summary>
public interface ITrainableMethod : IDisposable
{
    /// <summary>The registry name ("uio", "rmt", ...; see <see cref="TrainableMethods"/>).</summary>
    string Name { get; }

    /// <summary>The frozen base model the method is trained on.</summary>
    LlamaModel Base { get; }

    /// <summary>Every trainable leaf with whether AdamW's weight decay applies to it, always in the same order (the optimizer's and the checkpoint's order).</summary>
    IReadOnlyList<AdamWParameter> Parameters { get; }

    /// <summary>
    /// ADDS d(loss)/d(theta) of one document into the gradients of <see cref="Parameters"/> (callers zero them
    /// between steps). targets[i] is what document[i] must predict (document.Length - 1 of them; -100 leaves a
    /// position unscored). <paramref name="seed"/> drives any randomness of the document's pass (an estimator's draws,
    /// a sampled compression ratio), so a document's gradient is a function of (parameters, document, seed).
    /// </summary>
    /// <exception cref="ArgumentException">The document does not fit the method (too short, longer than it can read).</exception>
    DocumentLoss Accumulate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int seed);

    /// <summary>Writes the adapter (parameters and the settings needed to rebuild the method) into <paramref name="folder"/> (created if missing), atomically per file.</summary>
    void SaveAdapter(string folder, string? baseModelNameOrPath = null);

    /// <summary>Reads an adapter written by <see cref="SaveAdapter"/> into this method's parameters.</summary>
    /// <exception cref="Model.ModelFormatException">The folder is missing, damaged, or holds an adapter of another method, settings or base shape (the message says which).</exception>
    void LoadAdapter(string folder);

    /// <summary>
    /// A copy with the same settings and its own parameters (their values are overwritten before use) for
    /// side-by-side workers (<see cref="TrainingOptions.Workers"/>); null when the method cannot run documents in parallel.
    /// </summary>
    ITrainableMethod? CreateReplica();

    /// <summary>An inference session reading a stream through the current parameters (the evaluation harness's interface).</summary>
    ILongContextSession OpenSession();
}
