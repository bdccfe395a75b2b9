using UioLlm.Model;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Training.Estimators;
using UioLlm.Training.Optim;

namespace UioLlm.Training.Methods.Uio;

/// <summary>
/// UIO as a trainable method: the adapter of a <see cref="UioModel"/> (encoder LoRA, transfer LoRA, memory
/// embedding), each document through UIO's own segment loop with the estimator the factory makes from the
/// document's seed (full BPTT, truncated, incremental or unbiased incremental). A document's units are its scored
/// segments. Weight decay applies to the LoRA factors, not to the memory embedding.
/// </summary>
public sealed class UioTrainable : ITrainableMethod
{
    private readonly EstimatorFactory estimators;
    private readonly bool ownsModel;

    /// <param name="model">The UIO model whose adapter is trained (owned only when <paramref name="ownsModel"/>).</param>
    /// <param name="estimators">Makes a document's gradient estimator from its seed.</param>
    public UioTrainable(UioModel model, EstimatorFactory estimators, bool ownsModel = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(estimators);
        Model = model;
        this.estimators = estimators;
        this.ownsModel = ownsModel;
        Parameters = ParametersOf(model);
    }

    /// <summary>
    /// A fresh UIO memory on <paramref name="baseModel"/> (adapters drawn from <paramref name="seed"/>) trained with the
    /// unbiased incremental estimator over a reservoir of <paramref name="reservoir"/> segments: the UIO row of the comparisons. Owns its model.
    /// </summary>
    public static UioTrainable Unbiased(LlamaModel baseModel, UioConfig config, int reservoir, int seed) =>
        new(new UioModel(baseModel, config, seed), documentSeed => new UnbiasedIncremental(reservoir, documentSeed), ownsModel: true);

    /// <summary>A UIO model's trainable parameters with their weight-decay flags (every LoRA factor; not the memory embedding).</summary>
    public static IReadOnlyList<AdamWParameter> ParametersOf(UioModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model.TrainableParameters().Select(p => new AdamWParameter(p, Decay: !ReferenceEquals(p, model.MemoryEmbedding))).ToList();
    }

    public string Name => "uio";

    /// <summary>The UIO model trained.</summary>
    public UioModel Model { get; }

    public LlamaModel Base => Model.Base;

    public IReadOnlyList<AdamWParameter> Parameters { get; }

    public DocumentLoss Accumulate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int seed)
    {
        var estimator = estimators(seed) ?? throw new InvalidOperationException("UIO: the estimator factory returned null");
        var result = estimator.Accumulate(Model, document, targets);
        return new DocumentLoss(result.Loss, result.ScoredSegments, result.Tokens);
    }

    public void SaveAdapter(string folder, string? baseModelNameOrPath = null) => UioAdapter.Save(Model, folder, baseModelNameOrPath);

    /// <exception cref="ModelFormatException">The folder holds no UIO adapter, one with other UIO settings, or one that does not fit the base.</exception>
    public void LoadAdapter(string folder)
    {
        var saved = UioAdapter.ReadConfig(folder);
        if (saved != Model.Config)
            throw new ModelFormatException(Path.Combine(folder, UioAdapter.ConfigFileName), $"the adapter was trained with UIO settings {saved}, but the model has {Model.Config}");
        using var loaded = UioAdapter.Load(Model.Base, folder);
        var kernels = Model.Accelerator.Kernels;
        foreach (var (from, to) in loaded.TrainableParameters().Zip(Model.TrainableParameters()))
            kernels.Copy(from.Value, to.Value);
    }

    public ITrainableMethod CreateReplica() => new UioTrainable(new UioModel(Model.Base, Model.Config), estimators, ownsModel: true);

    public ILongContextSession OpenSession() => new UioSession(Model);

    public void Dispose()
    {
        if (ownsModel) Model.Dispose();
    }
}
