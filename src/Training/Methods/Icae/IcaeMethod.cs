using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Methods.Icae;
using UioLlm.Model.Modules;
using UioLlm.Training.Optim;

namespace UioLlm.Training.Methods.Icae;

/// <summary>
/// ICAE as a trainable method (<c>uio train --method icae:chunk=..:slots=..:rank=..:alpha=..:objective=lm|ae|both</c>).
/// A document's tokens that predict something (document[0 .. n-2]) are cut into chunks of <c>chunk</c>; each chunk
/// that is compressed is encoded alone into k slots (<see cref="IcaeModel.Compress"/>).
/// <list type="bullet">
/// <item>lm: chunk i is read by the frozen decoder after the slots of chunks 0 .. i-1 and its rows predict the
/// targets at their positions (-100 unscored): one unit per chunk with a scored target. Every chunk but the last is compressed.</item>
/// <item>ae: every chunk is compressed and reconstructed from its own slots after [AE]
/// (<see cref="IcaeModel.ReconstructionLoss"/>): the targets are the chunk's tokens themselves, whatever the
/// document's targets say; one unit per chunk.</item>
/// <item>both: the two sums added (units and scored tokens of both).</item>
/// </list>
/// Loss: the sum over units of each unit's mean cross-entropy. Gradients reach the encoder LoRA (q, v), the memory
/// embeddings (through the slots) and [AE] (auto-encoding only); the decoder is the frozen base.
/// </summary>
public sealed class IcaeMethod : ITrainableMethod
{
    /// <summary>The registry entry (name "icae").</summary>
    public static TrainableMethodDescriptor Descriptor { get; } = new("icae",
        "ICAE (in-context autoencoder, gist-token family): each chunk compressed into k memory slots by a LoRA(q,v) encoder; the frozen base reads the slots as input embeddings",
        [
            new("chunk", "min(512, window/2)", "context tokens compressed into one set of slots"),
            new("slots", "chunk/4", "k: memory slots per chunk"),
            new("rank", "16", "encoder LoRA rank on q, v"),
            new("alpha", "32", "encoder LoRA alpha (scale alpha/rank)"),
            new("objective", "both", "lm (continuation after the slots), ae (reconstruct the context from its slots) or both"),
        ],
        (baseModel, options, seed) => new IcaeMethod(baseModel, IcaeConfig.From(options, baseModel.Config), seed));

    private readonly AdamWParameter[] parameters;

    /// <summary>A fresh method (LoRA A and the memory/[AE] embeddings drawn from <paramref name="seed"/>, every B zero).</summary>
    public IcaeMethod(LlamaModel baseModel, IcaeConfig config, int seed = 0)
    {
        Model = new IcaeModel(baseModel, config, seed);
        parameters = [.. Model.Parameters().Select(p => new AdamWParameter(p, Decay: p != Model.MemoryEmbedding && p != Model.AeEmbedding))];
    }

    public string Name => Descriptor.Name;
    public LlamaModel Base => Model.Base;
    public IcaeModel Model { get; }
    public IcaeConfig Config => Model.Config;
    public IReadOnlyList<AdamWParameter> Parameters => parameters;

    public DocumentLoss Accumulate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int seed) => Run(document, targets, backward: true);

    /// <summary>The document's loss without gradients (the same forward as <see cref="Accumulate"/>).</summary>
    public DocumentLoss Evaluate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets) => Run(document, targets, backward: false);

    private DocumentLoss Run(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, bool backward)
    {
        CompressionDocuments.Check(Name, document, targets);
        int inputs = document.Length - 1, c = Config.Chunk;
        int chunks = (inputs + c - 1) / c;
        bool lm = Config.Objective != IcaeObjective.Ae, ae = Config.Objective != IcaeObjective.Lm;
        using var tape = new Tape(Model.Accelerator, "icae");
        using var noGrad = backward ? default(Tape.NoGradScope?) : tape.NoGrad();
        var slots = new List<Var>(chunks);
        Var? total = null;
        double loss = 0;
        int units = 0, tokens = 0;
        void Add(Var unitLoss, int scored)
        {
            loss += unitLoss.Value.ToArray()[0];
            units++;
            tokens += scored;
            total = total is null ? unitLoss : tape.Add(total, unitLoss);
        }
        for (int i = 0; i < chunks; i++)
        {
            int start = i * c, n = Math.Min(c, inputs - start);
            var chunk = document.Slice(start, n);
            if (lm)
            {
                var chunkTargets = targets.Slice(start, n);
                int scored = CompressionDocuments.Scored(chunkTargets);
                if (scored > 0)
                {
                    var hidden = Model.DecoderHidden(tape, slots.Count == 0 ? null : tape.ConcatRows(slots), null, chunk);
                    Add(Model.Loss(tape, hidden, chunkTargets), scored);
                }
            }
            if (ae || i < chunks - 1)
            {
                var own = Model.Compress(tape, chunk);
                slots.Add(own);
                if (ae) Add(Model.ReconstructionLoss(tape, own, chunk), n);
            }
        }
        if (backward && total is not null && total.RequiresGrad) tape.Backward(total);
        return new DocumentLoss(loss, units, tokens);
    }

    public void SaveAdapter(string folder, string? baseModelNameOrPath = null) =>
        TrainableMethods.SaveAdapter(folder, Name, Config.ToOptions(), Model.Parameters().Select(p => (p.Name!, p.Value)), baseModelNameOrPath, Base.Config);

    public void LoadAdapter(string folder) =>
        TrainableMethods.LoadAdapter(folder, Name, Config.ToOptions(), Model.Parameters().Select(p => (p.Name!, p.Value)));

    public ITrainableMethod? CreateReplica() => new IcaeMethod(Base, Config);

    public ILongContextSession OpenSession() => new IcaeSession(Model);

    public void Dispose() => Model.Dispose();
}
