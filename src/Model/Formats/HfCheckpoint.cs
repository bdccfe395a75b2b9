using System.Text.Json;
using UioLlm.Kernels;

namespace UioLlm.Model.Formats;

/// <summary>
/// A Hugging Face model folder: config.json plus model.safetensors, or shards listed by
/// model.safetensors.index.json ("weight_map": tensor name -> shard file). Tensor names and layout are
/// Hugging Face's, the same as <see cref="LlamaWeights"/>, so no permutation is needed.
/// </summary>
public static class HfCheckpoint
{
    public const string ConfigFile = "config.json";
    public const string SingleFile = "model.safetensors";
    public const string IndexFile = "model.safetensors.index.json";
    private const string HeadName = "lm_head.weight";

    /// <summary>Reads the model in <paramref name="folder"/> onto <paramref name="accelerator"/>.</summary>
    /// <exception cref="ModelFormatException">A file is missing or invalid, or a tensor is missing or has the wrong shape.</exception>
    public static LlamaWeights Load(string folder, Accelerator accelerator)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(accelerator);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"model folder '{folder}' does not exist");
        string configPath = Path.Combine(folder, ConfigFile);
        if (!File.Exists(configPath)) throw new ModelFormatException(folder, $"{ConfigFile} is missing");
        var config = HfConfig.Read(configPath);
        var tensors = OpenTensors(folder);
        // A checkpoint without lm_head.weight reuses the embedding, whatever the config says.
        if (!tensors.ContainsKey(HeadName)) config = config with { TiedEmbeddings = true };

        // Every parameter needs at least 2 bytes (F16/BF16) in the files: a config declaring more than the files
        // hold is refused before anything is allocated for it.
        long fileBytes = tensors.Values.Sum(t => t.Info.ByteLength);
        if (config.ParameterCount > fileBytes / 2)
            throw new ModelFormatException(configPath, $"the config declares {config.ParameterCount:N0} parameters, but the safetensors files hold only {fileBytes:N0} bytes of tensors (at least 2 bytes per parameter expected)");
        var weights = Allocate(accelerator, config, configPath);
        try
        {
            foreach (var (name, target) in weights.Named())
            {
                if (!tensors.TryGetValue(name, out var source))
                    throw new ModelFormatException(folder, $"tensor '{name}' {target.ShapeString} is missing from {DescribeSources(folder)}");
                LoadTensor(source.File, source.Info, target);
            }
            weights.RequireFinite(folder);
            return weights;
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Writes config.json and the weights to <paramref name="folder"/>: one model.safetensors, or, when
    /// <paramref name="maxShardBytes"/> &gt; 0, shards of at most that many data bytes (a larger tensor gets a shard
    /// of its own) plus model.safetensors.index.json. A stale file of the other layout is removed.
    /// </summary>
    public static void Save(LlamaWeights weights, string folder, SafetensorsDType dtype = SafetensorsDType.F32, long maxShardBytes = 0)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(folder);
        if (maxShardBytes < 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes), $"maxShardBytes must be >= 0, got {maxShardBytes}");
        // Before any file is written: a half-saved folder would load as a global-attention model.
        HfConfig.Family(weights.Config);
        Directory.CreateDirectory(folder);
        var entries = weights.Named().Select(x => SafetensorsEntry.FromTensor(x.Name, x.Tensor)).ToList();
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };

        if (maxShardBytes == 0)
        {
            SafetensorsWriter.Write(Path.Combine(folder, SingleFile), entries, dtype, metadata);
            DeleteIfExists(Path.Combine(folder, IndexFile));
        }
        else
        {
            var shards = Split(entries, dtype, maxShardBytes);
            var weightMap = new List<(string Tensor, string File)>();
            for (int i = 0; i < shards.Count; i++)
            {
                string file = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                SafetensorsWriter.Write(Path.Combine(folder, file), shards[i], dtype, metadata);
                weightMap.AddRange(shards[i].Select(e => (e.Name, file)));
            }
            long total = entries.Sum(e => SafetensorsWriter.DataBytes(e, dtype));
            AtomicFile.Write(Path.Combine(folder, IndexFile), s => s.Write(IndexJson(total, weightMap)));
            DeleteIfExists(Path.Combine(folder, SingleFile));
        }
        HfConfig.Write(weights.Config, Path.Combine(folder, ConfigFile), dtype);
    }

    private sealed record Source(SafetensorsFile File, SafetensorsTensorInfo Info);

    /// <summary>Every tensor of the folder's safetensors file(s), keyed by name.</summary>
    private static Dictionary<string, Source> OpenTensors(string folder)
    {
        string index = Path.Combine(folder, IndexFile), single = Path.Combine(folder, SingleFile);
        var result = new Dictionary<string, Source>(StringComparer.Ordinal);
        if (File.Exists(index))
        {
            var files = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            foreach (var (tensor, file) in ReadWeightMap(index))
            {
                if (!files.TryGetValue(file, out var shard))
                {
                    string shardPath = Path.Combine(folder, file);
                    if (!File.Exists(shardPath)) throw new ModelFormatException(index, $"weight_map names shard '{file}' (for '{tensor}'), which does not exist");
                    files[file] = shard = SafetensorsFile.Read(shardPath);
                }
                var info = shard.Find(tensor) ?? throw new ModelFormatException(shard.Path, $"tensor '{tensor}' is listed for this shard in {IndexFile} but is not in it");
                result[tensor] = new Source(shard, info);
            }
            return result;
        }
        if (!File.Exists(single))
            throw new ModelFormatException(folder, $"neither {SingleFile} nor {IndexFile} exists (only safetensors checkpoints are supported)");
        var only = SafetensorsFile.Read(single);
        foreach (var info in only.Tensors) result[info.Name] = new Source(only, info);
        return result;
    }

    /// <summary>Allocates the weights, reporting a shape too large for one block as a format error of <paramref name="path"/>.</summary>
    internal static LlamaWeights Allocate(Accelerator accelerator, LlamaConfig config, string path)
    {
        try
        {
            return LlamaWeights.Allocate(accelerator, config);
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException(path, e.Message, e);
        }
    }

    /// <summary>The "weight_map" of an index file; shard names must be plain file names inside the folder.</summary>
    private static List<(string Tensor, string File)> ReadWeightMap(string index)
    {
        try
        {
            byte[] bytes = File.ReadAllBytes(index);
            Utf8Text.Require(bytes, index, "the index");
            using var doc = JsonDocument.Parse(bytes);
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(index, "'weight_map' object is missing");
            var entries = new List<(string, string)>();
            foreach (var entry in map.EnumerateObject())
            {
                string? file = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString() : null;
                if (string.IsNullOrEmpty(file) || file != Path.GetFileName(file) || file is "." or "..")
                    throw new ModelFormatException(index, $"weight_map entry '{entry.Name}' is {entry.Value.GetRawText()}, expected a file name in the same folder");
                entries.Add((entry.Name, file));
            }
            return entries;
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(index, $"not valid JSON: {e.Message}", e);
        }
    }

    private static string DescribeSources(string folder) =>
        File.Exists(Path.Combine(folder, IndexFile)) ? $"{IndexFile}'s weight_map" : SingleFile;

    private static void LoadTensor(SafetensorsFile file, SafetensorsTensorInfo info, Tensor target)
    {
        var expected = target.Shape.ToArray().Select(d => (long)d).ToArray();
        if (!info.Shape.SequenceEqual(expected))
            throw new ModelFormatException(file.Path, $"tensor '{info.Name}' has shape {info.ShapeString}, expected {target.ShapeString} for the configured model");
        target.CopyFrom(file.ReadTensor(info));
    }

    /// <summary>Greedy split in order: a shard closes when the next tensor would push it past the limit.</summary>
    private static List<List<SafetensorsEntry>> Split(List<SafetensorsEntry> entries, SafetensorsDType dtype, long maxShardBytes)
    {
        var shards = new List<List<SafetensorsEntry>> { new() };
        long used = 0;
        foreach (var e in entries)
        {
            long bytes = SafetensorsWriter.DataBytes(e, dtype);
            if (shards[^1].Count > 0 && used + bytes > maxShardBytes)
            {
                shards.Add([]);
                used = 0;
            }
            shards[^1].Add(e);
            used += bytes;
        }
        return shards;
    }

    private static byte[] IndexJson(long totalSize, List<(string Tensor, string File)> weightMap)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", totalSize);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (tensor, file) in weightMap) json.WriteString(tensor, file);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return buffer.ToArray();
    }

    private static void DeleteIfExists(string path)
    {
        if (File.Exists(path)) File.Delete(path);
    }
}
