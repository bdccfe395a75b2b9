using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Modules;
using UioLlm.Model.Tokenizers;
using UioLlm.Model.Uio;
using UioLlm.Training;
using UioLlm.Training.Estimators;

namespace UioLlm.Fuzz;

/// <summary>
/// One parser under test: a folder of seed files (copied once into a work folder), the files that may be
/// mutated, and the call that parses the folder (and, for tokenizers, encodes and decodes a short text).
/// </summary>
public sealed class FuzzTarget
{
    public required string Name { get; init; }
    /// <summary>The seed folder: every input starts as a copy of it.</summary>
    public required string SeedFolder { get; init; }
    /// <summary>Files (relative to the folder) that mutations may change.</summary>
    public required string[] MutableFiles { get; init; }
    /// <summary>Parses the input folder; a typed error (see <see cref="FuzzTargets.IsTyped"/>) is the expected rejection.</summary>
    public required Action<string> Parse { get; init; }
    /// <summary>Run after a mutation, before parsing (e.g. re-sign a checkpoint manifest so the parse gets past it); may be null.</summary>
    public Action<string, Random>? AfterMutation { get; init; }
}

/// <summary>The parsers of the project, each with seed files made from the shared test data.</summary>
public static class FuzzTargets
{
    public static readonly string[] Names =
    [
        "llama2c-model", "llama2c-tokenizer", "gguf-model", "gguf-vocab", "safetensors", "hf-config", "hf-folder",
        "sentencepiece", "tokenizer-json", "encoder-json", "uio-adapter", "trainer-checkpoint",
    ];

    /// <summary>The errors a parser is meant to throw for bad input: they name the file and what was wrong.</summary>
    public static bool IsTyped(Exception e) =>
        e is ModelFormatException or CheckpointFormatException or UioLlm.Training.Data.DataFormatException;

    private const string SampleText = "Hello world! Once upon a time,  there was\ta cat. 123 \u00fcn\u00ef \U0001F600 <s> \u2581x";

    /// <summary>
    /// Builds the seeds of every target under <paramref name="workFolder"/> from the shared data in
    /// <paramref name="dataRoot"/>; the models load onto <paramref name="accelerator"/>.
    /// </summary>
    public static IReadOnlyList<FuzzTarget> Create(string dataRoot, string workFolder, Accelerator accelerator, IEnumerable<string>? only = null)
    {
        var wanted = (only ?? Names).ToHashSet();
        string seeds = Path.Combine(workFolder, "seeds");
        Directory.CreateDirectory(seeds);
        string Data(params string[] parts) => Path.Combine([dataRoot, .. parts]);
        string Seed(string name)
        {
            string folder = Path.Combine(seeds, name);
            if (Directory.Exists(folder)) Directory.Delete(folder, true);
            Directory.CreateDirectory(folder);
            return folder;
        }
        string Copy(string from, string folder, string name)
        {
            File.Copy(from, Path.Combine(folder, name));
            return name;
        }

        var targets = new List<FuzzTarget>();
        string storiesBin = Data("models", "stories260K", "stories260K.bin");
        string tok512 = Data("models", "stories260K", "tok512.bin");
        // Kept for the process's life: the adapter and checkpoint targets load onto this base model.
        var weights = Llama2cCheckpoint.Load(storiesBin, accelerator);
        var model = new LlamaModel(weights);

        void Tokenizes(string path)
        {
            var tokenizer = Tokenizer.Load(path);
            var ids = tokenizer.Encode(SampleText, addBos: true);
            tokenizer.Decode(ids);
        }

        if (wanted.Contains("llama2c-model"))
        {
            string f = Seed("llama2c-model");
            targets.Add(new FuzzTarget
            {
                Name = "llama2c-model", SeedFolder = f, MutableFiles = [Copy(storiesBin, f, "model.bin")],
                Parse = dir => Llama2cCheckpoint.Load(Path.Combine(dir, "model.bin"), accelerator).Dispose(),
            });
        }
        if (wanted.Contains("llama2c-tokenizer"))
        {
            string f = Seed("llama2c-tokenizer");
            targets.Add(new FuzzTarget
            {
                Name = "llama2c-tokenizer", SeedFolder = f, MutableFiles = [Copy(tok512, f, "tokenizer.bin")],
                Parse = dir => Tokenizes(Path.Combine(dir, "tokenizer.bin")),
            });
        }
        string ggufModel = Data("models", "quantized", "stories260K-ff192.f32.gguf");
        if (wanted.Contains("gguf-model"))
        {
            string f = Seed("gguf-model");
            targets.Add(new FuzzTarget
            {
                Name = "gguf-model", SeedFolder = f, MutableFiles = [Copy(ggufModel, f, "model.gguf")],
                Parse = dir => GgufCheckpoint.Load(Path.Combine(dir, "model.gguf"), accelerator).Dispose(),
            });
        }
        if (wanted.Contains("gguf-vocab"))
        {
            string f = Seed("gguf-vocab");
            targets.Add(new FuzzTarget
            {
                Name = "gguf-vocab", SeedFolder = f,
                MutableFiles = [Copy(Data("models", "quantized", "stories260K-ff192.Q8_0.gguf"), f, "vocab.gguf")],
                Parse = dir => Tokenizes(Path.Combine(dir, "vocab.gguf")),
            });
        }
        string hf = Path.Combine(workFolder, "hf-stories260K");
        if (Directory.Exists(hf)) Directory.Delete(hf, true);
        HfCheckpoint.Save(weights, hf);
        if (wanted.Contains("safetensors"))
        {
            string f = Seed("safetensors");
            targets.Add(new FuzzTarget
            {
                Name = "safetensors", SeedFolder = f, MutableFiles = [Copy(Path.Combine(hf, "model.safetensors"), f, "model.safetensors")],
                Parse = dir =>
                {
                    var file = SafetensorsFile.Read(Path.Combine(dir, "model.safetensors"));
                    foreach (var t in file.Tensors) file.ReadTensor(t);
                },
            });
        }
        if (wanted.Contains("hf-config"))
        {
            string f = Seed("hf-config");
            targets.Add(new FuzzTarget
            {
                Name = "hf-config", SeedFolder = f, MutableFiles = [Copy(Path.Combine(hf, "config.json"), f, "config.json")],
                Parse = dir => HfConfig.Read(Path.Combine(dir, "config.json")),
            });
        }
        if (wanted.Contains("hf-folder"))
        {
            string f = Seed("hf-folder");
            targets.Add(new FuzzTarget
            {
                Name = "hf-folder", SeedFolder = f,
                MutableFiles = [Copy(Path.Combine(hf, "config.json"), f, "config.json"), Copy(Path.Combine(hf, "model.safetensors"), f, "model.safetensors")],
                Parse = dir => HfCheckpoint.Load(dir, accelerator).Dispose(),
            });
        }
        if (wanted.Contains("sentencepiece"))
        {
            string f = Seed("sentencepiece");
            File.WriteAllBytes(Path.Combine(f, "tokenizer.model"), SentencePieceModelFrom(tok512));
            targets.Add(new FuzzTarget
            {
                Name = "sentencepiece", SeedFolder = f, MutableFiles = ["tokenizer.model"],
                Parse = dir => Tokenizes(Path.Combine(dir, "tokenizer.model")),
            });
        }
        if (wanted.Contains("tokenizer-json") || wanted.Contains("encoder-json"))
        {
            var (encoder, merges) = Gpt2Subset(Data("tokenizers", "gpt2", "encoder.json"), Data("tokenizers", "gpt2", "vocab.bpe"), 1000);
            if (wanted.Contains("tokenizer-json"))
            {
                string f = Seed("tokenizer-json");
                File.WriteAllText(Path.Combine(f, "tokenizer.json"), TokenizerJson(encoder, merges));
                targets.Add(new FuzzTarget
                {
                    Name = "tokenizer-json", SeedFolder = f, MutableFiles = ["tokenizer.json"],
                    Parse = dir => Tokenizes(Path.Combine(dir, "tokenizer.json")),
                });
            }
            if (wanted.Contains("encoder-json"))
            {
                string f = Seed("encoder-json");
                var withEnd = new Dictionary<string, int>(encoder) { ["<|endoftext|>"] = encoder.Count };
                File.WriteAllText(Path.Combine(f, "encoder.json"), JsonSerializer.Serialize(withEnd));
                File.WriteAllText(Path.Combine(f, "vocab.bpe"), "#version: 0.2\n" + string.Join("\n", merges.Select(m => m.A + " " + m.B)) + "\n");
                targets.Add(new FuzzTarget
                {
                    Name = "encoder-json", SeedFolder = f, MutableFiles = ["encoder.json", "vocab.bpe"],
                    Parse = dir => Tokenizes(Path.Combine(dir, "encoder.json")),
                });
            }
        }
        var uioConfig = new UioConfig { SegmentLength = 8, MemoryTokens = 2, EncoderRank = 2, EncoderAlpha = 4, TransferRank = 2, TransferAlpha = 4 };
        if (wanted.Contains("uio-adapter"))
        {
            string f = Seed("uio-adapter");
            using (var uio = new UioModel(model, uioConfig, seed: 1)) UioAdapter.Save(uio, f, "stories260K.bin");
            targets.Add(new FuzzTarget
            {
                Name = "uio-adapter", SeedFolder = f, MutableFiles = Directory.GetFiles(f).Select(Path.GetFileName).ToArray()!,
                Parse = dir => UioAdapter.Load(model, dir).Dispose(),
            });
        }
        if (wanted.Contains("trainer-checkpoint"))
        {
            string f = Seed("trainer-checkpoint");
            var document = Enumerable.Range(0, 3 * uioConfig.SegmentLength + 1).Select(i => 3 + (i * 37) % 500).ToArray();
            EstimatorFactory factory = seed => new UnbiasedIncremental(2, seed);
            using (var uio = new UioModel(model, uioConfig, seed: 1))
            using (var trainer = new Trainer(uio, new InMemoryTrainingData([document]), factory,
                       new TrainingOptions { TotalSteps = 3, CheckpointEvery = 1 }, f))
                trainer.Run(stopAfterStep: 1);
            string checkpoint = Path.Combine("checkpoints", "step-00000001");
            var files = Directory.GetFiles(Path.Combine(f, checkpoint), "*", SearchOption.AllDirectories)
                .Select(p => Path.GetRelativePath(f, p)).OrderBy(p => p, StringComparer.Ordinal).ToArray();
            var resumeModel = new UioModel(model, uioConfig, seed: 2);
            targets.Add(new FuzzTarget
            {
                Name = "trainer-checkpoint", SeedFolder = f, MutableFiles = files,
                // Half the time the manifest is re-signed, so that the mutated file gets past the hash check.
                AfterMutation = (dir, rng) => { if (rng.Next(2) == 0) Resign(Path.Combine(dir, checkpoint)); },
                Parse = dir =>
                {
                    using var trainer = Trainer.Resume(dir, resumeModel, new InMemoryTrainingData([document]), factory);
                },
            });
        }
        return targets;
    }

    /// <summary>Rewrites manifest.json's sizes and hashes to match the folder's files (keeping its other fields).</summary>
    private static void Resign(string checkpoint)
    {
        string path = Path.Combine(checkpoint, Checkpoint.ManifestFileName);
        try
        {
            var root = JsonNode.Parse(File.ReadAllBytes(path));
            if (root is not JsonObject obj || obj["files"] is not JsonArray files) return;
            foreach (var entry in files)
            {
                if (entry is not JsonObject e || e["path"] is not JsonValue p || !p.TryGetValue(out string? relative)) continue;
                string full = Path.Combine(checkpoint, relative);
                if (relative.Contains("..") || !File.Exists(full)) continue;
                byte[] bytes = File.ReadAllBytes(full);
                e["bytes"] = bytes.Length;
                e["sha256"] = Convert.ToHexStringLower(SHA256.HashData(bytes));
            }
            File.WriteAllText(path, root.ToJsonString());
        }
        catch (Exception)
        {
            // A manifest the mutation made unreadable stays as it is.
        }
    }

    /// <summary>The first <paramref name="size"/> ids of GPT-2's vocabulary and the merges that make them (ids 256.. are merges in rank order).</summary>
    private static (Dictionary<string, int> Encoder, List<(string A, string B)> Merges) Gpt2Subset(string encoderJson, string vocabBpe, int size)
    {
        var full = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(encoderJson))!;
        var encoder = full.Where(kv => kv.Value < size).ToDictionary(kv => kv.Key, kv => kv.Value);
        var merges = File.ReadLines(vocabBpe).Skip(1).Take(size - 256)
            .Select(l => l.Split(' ')).Select(p => (p[0], p[1])).ToList();
        return (encoder, merges);
    }

    private static string TokenizerJson(Dictionary<string, int> encoder, List<(string A, string B)> merges)
    {
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(new JsonObject
            {
                ["id"] = encoder.Count, ["content"] = "<|endoftext|>", ["single_word"] = false, ["lstrip"] = false,
                ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = "", ["end_of_word_suffix"] = "",
                ["fuse_unk"] = false, ["byte_fallback"] = false,
                ["vocab"] = new JsonObject(encoder.OrderBy(kv => kv.Value).Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value)))),
                ["merges"] = new JsonArray(merges.Select(m => (JsonNode?)new JsonArray(m.A, m.B)).ToArray()),
            },
        };
        return root.ToJsonString();
    }

    /// <summary>
    /// A SentencePiece BPE ModelProto with the vocabulary of a llama2.c tokenizer.bin (pieces, scores; types:
    /// unk, control, byte, normal), byte fallback on, the identity normalizer with a dummy prefix.
    /// </summary>
    public static byte[] SentencePieceModelFrom(string llama2cTokenizer)
    {
        byte[] bin = File.ReadAllBytes(llama2cTokenizer);
        var proto = new MemoryStream();
        int at = 4;
        for (int id = 0; at < bin.Length; id++)
        {
            float score = BinaryPrimitives.ReadSingleLittleEndian(bin.AsSpan(at));
            int length = BinaryPrimitives.ReadInt32LittleEndian(bin.AsSpan(at + 4));
            string piece = Encoding.UTF8.GetString(bin, at + 8, length).Replace(' ', '\u2581');
            at += 8 + length;
            int type = id == 0 ? 2 : id <= 2 ? 3 : SentencePieceVocab_IsByte(piece) ? 6 : 1;
            var message = new MemoryStream();
            WriteBytes(message, 1, Encoding.UTF8.GetBytes(piece));
            WriteKey(message, 2, 5);
            message.Write(BitConverter.GetBytes(score));
            WriteVarintField(message, 3, (ulong)type);
            WriteBytes(proto, 1, message.ToArray());
        }
        var trainer = new MemoryStream();
        WriteVarintField(trainer, 3, 2);   // model_type BPE
        WriteVarintField(trainer, 35, 1);  // byte_fallback
        WriteVarintField(trainer, 40, 0);  // unk_id
        WriteVarintField(trainer, 41, 1);  // bos_id
        WriteVarintField(trainer, 42, 2);  // eos_id
        WriteBytes(proto, 2, trainer.ToArray());
        var normalizer = new MemoryStream();
        WriteBytes(normalizer, 1, "identity"u8.ToArray());
        WriteVarintField(normalizer, 3, 1); // add_dummy_prefix
        WriteBytes(proto, 3, normalizer.ToArray());
        return proto.ToArray();
    }

    private static bool SentencePieceVocab_IsByte(string piece) =>
        piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>';

    private static void WriteKey(Stream s, int field, int wire) => WriteVarint(s, (ulong)(field << 3 | wire));

    private static void WriteVarintField(Stream s, int field, ulong value)
    {
        WriteKey(s, field, 0);
        WriteVarint(s, value);
    }

    private static void WriteBytes(Stream s, int field, byte[] bytes)
    {
        WriteKey(s, field, 2);
        WriteVarint(s, (ulong)bytes.Length);
        s.Write(bytes);
    }

    private static void WriteVarint(Stream s, ulong value)
    {
        while (value >= 0x80)
        {
            s.WriteByte((byte)(value | 0x80));
            value >>= 7;
        }
        s.WriteByte((byte)value);
    }
}
