using System.Globalization;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Formats;
using UioLlm.Model.Uio;

namespace UioLlm.Training.Optim;

/// <summary>AdamW hyperparameters (the paper's defaults: betas 0.9 / 0.95, eps 1e-8, weight decay 0.1).</summary>
public sealed record AdamWSettings(float Beta1 = 0.9f, float Beta2 = 0.95f, float Epsilon = 1e-8f, float WeightDecay = 0.1f)
{
    /// <summary>Throws ArgumentException naming the first field out of range.</summary>
    public void Validate()
    {
        if (!(Beta1 >= 0f && Beta1 < 1f)) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, "AdamW: beta1 must lie in [0, 1)");
        if (!(Beta2 >= 0f && Beta2 < 1f)) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "AdamW: beta2 must lie in [0, 1)");
        if (!(Epsilon > 0f) || !float.IsFinite(Epsilon)) throw new ArgumentOutOfRangeException(nameof(Epsilon), Epsilon, "AdamW: epsilon must be a positive finite number");
        if (!(WeightDecay >= 0f) || !float.IsFinite(WeightDecay)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "AdamW: weight decay must be a finite number >= 0");
    }
}

/// <summary>One optimised parameter and whether weight decay applies to it.</summary>
public sealed record AdamWParameter(Var Parameter, bool Decay);

/// <summary>
/// AdamW (decoupled weight decay) over a fixed list of leaf parameters, each with its own first and second
/// moment tensors; one <see cref="Step"/> calls the <see cref="IKernels.AdamW"/> kernel per parameter with its
/// gradient. Moments and the step count save to, and load from, a safetensors file.
/// </summary>
public sealed class AdamW : IDisposable
{
    private const string StepKey = "step";
    private readonly AdamWParameter[] parameters;
    private readonly Tensor[] m, v;
    private bool disposed;

    public AdamW(IReadOnlyList<AdamWParameter> parameters, AdamWSettings settings)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        if (parameters.Count == 0) throw new ArgumentException("AdamW: no parameters to optimise", nameof(parameters));
        for (int i = 0; i < parameters.Count; i++)
            if (!parameters[i].Parameter.IsLeaf || !parameters[i].Parameter.RequiresGrad)
                throw new ArgumentException($"AdamW: parameter {i} ('{parameters[i].Parameter.Name}') is not a leaf that requires a gradient", nameof(parameters));
        var names = parameters.Select(NameOf).ToList();
        var duplicate = names.GroupBy(n => n).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new ArgumentException($"AdamW: two parameters are named '{duplicate.Key}'", nameof(parameters));

        this.parameters = parameters.ToArray();
        Settings = settings;
        m = new Tensor[this.parameters.Length];
        v = new Tensor[this.parameters.Length];
        for (int i = 0; i < this.parameters.Length; i++)
        {
            var value = this.parameters[i].Parameter.Value;
            m[i] = value.Accelerator.Allocate(value.Shape, names[i] + ".exp_avg");
            v[i] = value.Accelerator.Allocate(value.Shape, names[i] + ".exp_avg_sq");
            value.Accelerator.Kernels.Fill(m[i], 0f);
            value.Accelerator.Kernels.Fill(v[i], 0f);
        }
    }

    /// <summary>
    /// The UIO rule: every trainable parameter of <paramref name="uio"/>, with weight decay on the LoRA matrices
    /// only, never on the memory embedding (a shared input vector, not a weight matrix).
    /// </summary>
    public static AdamW ForUio(UioModel uio, AdamWSettings settings) => new(Methods.Uio.UioTrainable.ParametersOf(uio).ToList(), settings);

    public AdamWSettings Settings { get; }

    public IReadOnlyList<AdamWParameter> Parameters => parameters;

    /// <summary>Optimizer steps taken so far (the bias corrections use StepCount after increment).</summary>
    public int StepCount { get; private set; }

    /// <summary>The first and second moments of parameter <paramref name="index"/>.</summary>
    public (Tensor M, Tensor V) Moments(int index)
    {
        ThrowIfDisposed();
        return (m[index], v[index]);
    }

    /// <summary>
    /// One update of every parameter from its current gradient (a parameter with no gradient yet counts as a
    /// zero gradient: it still decays and follows its momentum).
    /// </summary>
    public void Step(float learningRate)
    {
        ThrowIfDisposed();
        if (!(learningRate >= 0f) || !float.IsFinite(learningRate))
            throw new ArgumentOutOfRangeException(nameof(learningRate), learningRate, "AdamW: the learning rate must be a finite number >= 0");
        StepCount++;
        for (int i = 0; i < parameters.Length; i++)
        {
            var (p, decay) = parameters[i];
            if (p.Grad is null) p.ZeroGrad();
            var step = new AdamWStep(learningRate, StepCount, Settings.Beta1, Settings.Beta2, Settings.Epsilon,
                decay ? Settings.WeightDecay : 0f);
            p.Accelerator.Kernels.AdamW(p.Value, p.Grad!, m[i], v[i], step);
        }
    }

    /// <summary>Writes the moments (tensors "{name}.exp_avg" and "{name}.exp_avg_sq") and the step count, atomically.</summary>
    public void Save(string path)
    {
        ThrowIfDisposed();
        var entries = new List<SafetensorsEntry>();
        for (int i = 0; i < parameters.Length; i++)
        {
            entries.Add(SafetensorsEntry.FromTensor(m[i].Name!, m[i]));
            entries.Add(SafetensorsEntry.FromTensor(v[i].Name!, v[i]));
        }
        SafetensorsWriter.Write(path, entries, SafetensorsDType.F32,
            new Dictionary<string, string> { [StepKey] = StepCount.ToString(CultureInfo.InvariantCulture) });
    }

    /// <summary>Restores the moments and step count written by <see cref="Save"/>; names and shapes must match these parameters.</summary>
    /// <exception cref="CheckpointFormatException">The file is missing, unreadable, or holds other parameters.</exception>
    public void Load(string path)
    {
        ThrowIfDisposed();
        if (!File.Exists(path)) throw new CheckpointFormatException(path, "optimizer state is missing");
        SafetensorsFile file;
        try
        {
            file = SafetensorsFile.Read(path);
        }
        catch (ModelFormatException e)
        {
            throw new CheckpointFormatException(path, $"optimizer state is unreadable: {e.Message}", e);
        }
        if (!file.Metadata.TryGetValue(StepKey, out string? stepText)
            || !int.TryParse(stepText, NumberStyles.None, CultureInfo.InvariantCulture, out int step))
            throw new CheckpointFormatException(path, $"optimizer state has no valid '{StepKey}' metadata entry (expected a non-negative integer)");
        if (file.Tensors.Count != 2 * parameters.Length)
            throw new CheckpointFormatException(path, $"optimizer state has {file.Tensors.Count} tensors, expected {2 * parameters.Length} (two moments for each of {parameters.Length} parameters)");
        for (int i = 0; i < parameters.Length; i++)
        {
            ReadMoment(file, m[i]);
            ReadMoment(file, v[i]);
        }
        StepCount = step;
    }

    private static void ReadMoment(SafetensorsFile file, Tensor moment)
    {
        var info = file.Find(moment.Name!) ?? throw new CheckpointFormatException(file.Path, $"optimizer state lacks tensor '{moment.Name}'");
        var want = moment.Shape.ToArray().Select(d => (long)d);
        if (!info.Shape.SequenceEqual(want))
            throw new CheckpointFormatException(file.Path, $"optimizer tensor '{moment.Name}' has shape {info.ShapeString}, expected {moment.ShapeString}");
        moment.CopyFrom(file.ReadTensor(info));
    }

    private static string NameOf(AdamWParameter p, int index) => p.Parameter.Name ?? $"parameter.{index}";

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(disposed, this);

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        foreach (var t in m) t.Dispose();
        foreach (var t in v) t.Dispose();
    }
}
