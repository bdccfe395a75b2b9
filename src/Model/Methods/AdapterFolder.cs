using System.Text;
using UioLlm.Kernels;
using UioLlm.Model.Formats;

namespace UioLlm.Model.Methods;

/// <summary>
/// The adapter folder every trained method writes and reads, PEFT's layout: <c>adapter_model.safetensors</c>
/// (F32 tensors under the method's parameter names: the names in memory are the names in the file) and
/// <c>adapter_config.json</c> (the method's own settings, written by the method). Tensors are written first,
/// the config last, each atomically, so a folder with a config is complete and an interrupted save leaves the
/// previous adapter intact. Loading checks every name and shape and refuses missing or extra tensors.
/// </summary>
public static class AdapterFolder
{
    public const string WeightsFileName = "adapter_model.safetensors";
    public const string ConfigFileName = "adapter_config.json";

    /// <summary>Writes the named tensors, then the config text.</summary>
    public static void Save(string folder, IEnumerable<(string Name, Tensor Value)> tensors, string configJson)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(configJson);
        Directory.CreateDirectory(folder);
        var entries = tensors.Select(t => SafetensorsEntry.FromTensor(t.Name, t.Value)).ToList();
        var duplicate = entries.GroupBy(e => e.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new ArgumentException($"AdapterFolder.Save: tensor name '{duplicate.Key}' is used twice", nameof(tensors));
        SafetensorsWriter.Write(Path.Combine(folder, WeightsFileName), entries, SafetensorsDType.F32, new Dictionary<string, string> { ["format"] = "pt" });
        byte[] json = Encoding.UTF8.GetBytes(configJson);
        AtomicFile.Write(Path.Combine(folder, ConfigFileName), stream => stream.Write(json));
    }

    /// <summary>The config text; a missing file is a <see cref="ModelFormatException"/> naming the folder.</summary>
    public static string ReadConfig(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        string path = Path.Combine(folder, ConfigFileName);
        if (!File.Exists(path)) throw new ModelFormatException(path, $"adapter config is missing: expected {ConfigFileName} in '{folder}'");
        return File.ReadAllText(path);
    }

    /// <summary>
    /// Fills each target tensor from the tensor of the same name, checking shapes; a tensor the method has no
    /// place for is refused too (the file belongs to another layout). <paramref name="describe"/> adds what the
    /// method's shapes depend on to a shape error (e.g. its ranks).
    /// </summary>
    public static void LoadTensors(string folder, IEnumerable<(string Name, Tensor Target)> parameters, string describe = "")
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        string path = Path.Combine(folder, WeightsFileName);
        if (!File.Exists(path)) throw new ModelFormatException(path, $"adapter weights are missing: expected {WeightsFileName} in '{folder}'");
        var file = SafetensorsFile.Read(path);
        var expected = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, target) in parameters)
        {
            expected.Add(name);
            var info = file.Find(name) ?? throw new ModelFormatException(file.Path, $"tensor '{name}' is missing");
            long[] want = target.Shape.ToArray().Select(d => (long)d).ToArray();
            if (!info.Shape.SequenceEqual(want))
                throw new ModelFormatException(file.Path, $"tensor '{name}' has shape {info.ShapeString}, expected [{string.Join(", ", want)}]" + (describe.Length > 0 ? $" ({describe})" : ""));
            float[] values = file.ReadTensor(info);
            int bad = NonFinite.FirstIndex(values);
            if (bad >= 0)
                throw new ModelFormatException(file.Path,
                    $"tensor '{info.Name}' holds a non-finite weight: {NonFinite.Describe(values[bad])} at index {NonFinite.Coordinates(target.Shape, bad)} (the adapter was saved from a diverged run?)");
            target.CopyFrom(values);
        }
        var extra = file.Tensors.FirstOrDefault(t => !expected.Contains(t.Name));
        if (extra is not null)
            throw new ModelFormatException(file.Path, $"unexpected tensor '{extra.Name}' {extra.ShapeString}: this adapter layout has only {expected.Count} tensors");
    }
}
