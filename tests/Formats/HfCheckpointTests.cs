using System.Buffers.Binary;
using System.Text.Json;
using System.Text.RegularExpressions;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Formats.FormatsTestSupport;

namespace UioLlm.Tests.Formats;

public class HfCheckpointTests
{
    [DataFact]
    public void Stories260K_saved_as_hf_reloads_bit_exact()
    {
        using var dir = new TempDir();
        using var w = Llama2cCheckpoint.Load(Stories260K, TestBackend.Shared);
        HfCheckpoint.Save(w, dir.Path);
        Assert.Equal(["config.json", "model.safetensors"], Directory.GetFiles(dir.Path).Select(Path.GetFileName).Order());

        using var again = HfCheckpoint.Load(dir.Path, TestBackend.Shared);
        AssertBitEqual(w, again);

        using var config = JsonDocument.Parse(File.ReadAllText(dir.File("config.json")));
        Assert.Equal("LlamaForCausalLM", config.RootElement.GetProperty("architectures")[0].GetString());
        Assert.Equal("llama", config.RootElement.GetProperty("model_type").GetString());
        Assert.Equal("float32", config.RootElement.GetProperty("torch_dtype").GetString());
        var file = SafetensorsFile.Read(dir.File("model.safetensors"));
        Assert.Equal(1 + 5 * 9 + 1, file.Tensors.Count); // tied: no lm_head.weight
        Assert.Equal([64L, 64L], file.Find("model.layers.0.self_attn.q_proj.weight")!.Shape);
        Assert.Equal("pt", file.Metadata["format"]);
    }

    [Fact]
    public void Sharded_save_writes_an_index_and_reloads_bit_exact()
    {
        using var dir = new TempDir();
        using var w = RandomWeights(TestBackend.Shared, tied: false);
        HfCheckpoint.Save(w, dir.Path, maxShardBytes: 2048);
        var shards = Directory.GetFiles(dir.Path, "model-*-of-*.safetensors");
        Assert.True(shards.Length > 2, $"expected several shards, got {shards.Length}");
        Assert.False(File.Exists(dir.File("model.safetensors")));
        foreach (var shard in shards)
        {
            var f = SafetensorsFile.Read(shard);
            // A shard exceeds the limit only when it holds a single larger tensor.
            Assert.True(f.Tensors.Sum(t => t.ByteLength) <= 2048 || f.Tensors.Count == 1, $"{shard} is over the limit");
        }
        using (var index = JsonDocument.Parse(File.ReadAllText(dir.File("model.safetensors.index.json"))))
        {
            Assert.Equal(w.Named().Count(), index.RootElement.GetProperty("weight_map").EnumerateObject().Count());
            Assert.Equal(w.Config.ParameterCount * 4, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
        }
        using var again = HfCheckpoint.Load(dir.Path, TestBackend.Shared);
        AssertBitEqual(w, again);

        // Saving the same folder unsharded replaces the index.
        HfCheckpoint.Save(w, dir.Path);
        Assert.False(File.Exists(dir.File("model.safetensors.index.json")));
        using var single = HfCheckpoint.Load(dir.Path, TestBackend.Shared);
        AssertBitEqual(w, single);
    }

    [Theory]
    [InlineData(SafetensorsDType.F16)]
    [InlineData(SafetensorsDType.BF16)]
    public void Half_precision_save_reloads_the_rounded_values(SafetensorsDType dtype)
    {
        using var dir = new TempDir();
        using var w = RandomWeights(TestBackend.Shared, tied: false);
        HfCheckpoint.Save(w, dir.Path, dtype);
        using var again = HfCheckpoint.Load(dir.Path, TestBackend.Shared);
        Assert.Equal(w.Config, again.Config);
        foreach (var (name, t) in w.Named())
        {
            var expected = t.ToArray().Select(x => dtype == SafetensorsDType.F16
                ? HalfReference.Decode(RoundingReference.ToHalf(x))
                : BitConverter.Int32BitsToSingle(RoundingReference.ToBFloat16(x) << 16)).ToArray();
            AssertBits(expected, again.Find(name)!.ToArray(), name);
        }
    }

    [Fact]
    public void Missing_lm_head_means_a_tied_head_even_if_the_config_says_otherwise()
    {
        using var dir = new TempDir();
        using var w = RandomWeights(TestBackend.Shared, tied: true);
        HfCheckpoint.Save(w, dir.Path);
        HfConfig.Write(w.Config with { TiedEmbeddings = false }, dir.File("config.json"));
        using var again = HfCheckpoint.Load(dir.Path, TestBackend.Shared);
        Assert.True(again.Config.TiedEmbeddings);
        Assert.Same(again.TokenEmbedding, again.Output);
        AssertBitEqual(w, again);
    }

    /// <summary>Saves random weights, then writes model.safetensors again from the given entries.</summary>
    private static void SaveWith(TempDir dir, Func<List<SafetensorsEntry>, List<SafetensorsEntry>> edit)
    {
        using var w = RandomWeights(TestBackend.Shared, tied: false);
        HfCheckpoint.Save(w, dir.Path);
        var entries = w.Named().Select(x => SafetensorsEntry.FromTensor(x.Name, x.Tensor)).ToList();
        SafetensorsWriter.Write(dir.File("model.safetensors"), edit(entries));
    }

    [Fact]
    public void Missing_tensor_is_named()
    {
        using var dir = new TempDir();
        SaveWith(dir, e => e.Where(x => x.Name != "model.layers.1.mlp.up_proj.weight").ToList());
        AssertFormatError(() => HfCheckpoint.Load(dir.Path, TestBackend.Shared), dir.Path, "'model.layers.1.mlp.up_proj.weight'", "missing from model.safetensors");
    }

    [Fact]
    public void Wrong_shape_is_named_with_file_and_tensor()
    {
        using var dir = new TempDir();
        SaveWith(dir, e => e.Select(x => x.Name == "model.layers.0.self_attn.k_proj.weight"
            ? SafetensorsEntry.FromArray(x.Name, [16, 8], new float[128]) : x).ToList());
        AssertFormatError(() => HfCheckpoint.Load(dir.Path, TestBackend.Shared),
            dir.File("model.safetensors"), "'model.layers.0.self_attn.k_proj.weight' has shape [16, 8], expected [8, 16]");
    }

    [Fact]
    public void Out_of_range_offset_and_bad_header_length_are_named()
    {
        using var dir = new TempDir();
        using var w = RandomWeights(TestBackend.Shared, tied: false);
        HfCheckpoint.Save(w, dir.Path);
        string model = dir.File("model.safetensors");
        byte[] bytes = File.ReadAllBytes(model);

        // Cutting the file leaves the last tensor (lm_head) pointing past the data.
        File.WriteAllBytes(model, bytes.AsSpan(0, bytes.Length - 4).ToArray());
        AssertFormatError(() => HfCheckpoint.Load(dir.Path, TestBackend.Shared), model, "'lm_head.weight'", "extend past the data section");

        var badLength = (byte[])bytes.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(badLength, (ulong)bytes.Length);
        File.WriteAllBytes(model, badLength);
        AssertFormatError(() => HfCheckpoint.Load(dir.Path, TestBackend.Shared), model, $"header length is {bytes.Length}");
    }

    [Fact]
    public void Missing_files_and_bad_indexes_are_reported()
    {
        using var dir = new TempDir();
        Assert.Throws<DirectoryNotFoundException>(() => HfCheckpoint.Load(dir.File("nowhere"), TestBackend.Shared));
        AssertFormatError(() => HfCheckpoint.Load(dir.Path, TestBackend.Shared), dir.Path, "config.json is missing");

        using var w = RandomWeights(TestBackend.Shared, tied: false);
        HfCheckpoint.Save(w, dir.Path, maxShardBytes: 4096);
        string index = dir.File("model.safetensors.index.json");
        string original = File.ReadAllText(index);

        File.WriteAllText(index, original.Replace("model-00001-of-", "model-00009-of-"));
        AssertFormatError(() => HfCheckpoint.Load(dir.Path, TestBackend.Shared), index, "shard 'model-00009-of-", "does not exist");

        File.WriteAllText(index, original.Replace("\"model-00001-of-", "\"../model-00001-of-"));
        AssertFormatError(() => HfCheckpoint.Load(dir.Path, TestBackend.Shared), index, "expected a file name in the same folder");

        // Point the final norm (in the last shard) at the first shard.
        File.WriteAllText(index, Regex.Replace(original, "\"model.norm.weight\": \"model-\\d+", "\"model.norm.weight\": \"model-00001"));
        var e = AssertFormatError(() => HfCheckpoint.Load(dir.Path, TestBackend.Shared), "'model.norm.weight' is listed for this shard");
        Assert.Matches("model-00001-of-\\d+\\.safetensors$", e.File);

        File.Delete(index);
        AssertFormatError(() => HfCheckpoint.Load(dir.Path, TestBackend.Shared), dir.Path, "neither model.safetensors nor model.safetensors.index.json");
    }
}
