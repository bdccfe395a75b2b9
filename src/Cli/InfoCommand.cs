using Spectre.Console;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Uio;

namespace UioLlm.Cli;

/// <summary>`uio info PATH`: what a checkpoint, GGUF file, Hugging Face folder or UIO adapter holds, without loading the weights.</summary>
internal static class InfoCommand
{
    public static int Run(string path, TextWriter output, TextWriter error) => CliSupport.Guarded("info", error, () =>
    {
        CliSupport.RequireExists(path, "PATH");
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output) });
        var table = new Table().AddColumns("field", "value");
        void Row(string field, object? value) => table.AddRow(Markup.Escape(field), Markup.Escape(value?.ToString() ?? "-"));

        if (Directory.Exists(path) && File.Exists(Path.Combine(path, UioAdapter.ConfigFileName)))
        {
            var manifest = UioAdapter.ReadManifest(path);
            var c = manifest.Config;
            Row("kind", "UIO adapter");
            Row("segment length l", c.SegmentLength);
            Row("memory tokens n", $"{c.MemoryTokens} ({c.Compression}x compression)");
            Row("encoder LoRA (q_proj, v_proj)", $"r {c.EncoderRank}, alpha {c.EncoderAlpha}");
            Row("transfer LoRA (k_proj, v_proj)", $"r {c.TransferRank}, alpha {c.TransferAlpha}");
            Row("memory cap", c.MemoryCapSegments == 0 ? "none" : $"{c.MemoryCapSegments} segments");
            var b = manifest.BaseShape;
            Row("base model", $"{manifest.BaseModelNameOrPath ?? "unnamed"}: hidden {b.HiddenSize}, {b.NumHiddenLayers} layers, {b.NumAttentionHeads} heads ({b.NumKeyValueHeads} kv), vocab {b.VocabSize}");
        }
        else
        {
            var format = ModelLoader.Detect(path);
            Row("kind", format switch
            {
                CheckpointFormat.Gguf => "GGUF",
                CheckpointFormat.HuggingFace => "Hugging Face folder",
                _ => "llama2.c checkpoint",
            });
            LlamaConfig config;
            switch (format)
            {
                case CheckpointFormat.Gguf:
                {
                    var gguf = GgufFile.Read(path);
                    config = GgufCheckpoint.ReadConfig(gguf);
                    Row("GGUF version", gguf.Version);
                    Row("tensors", $"{gguf.Tensors.Count} ({string.Join(", ", gguf.Tensors.GroupBy(t => t.Type).Select(g => $"{g.Count()} {g.Key}"))})");
                    if (gguf.TryGet<string>("general.name", out var name)) Row("name", name);
                    if (gguf.TryGet<string>("tokenizer.ggml.model", out var tok)) Row("tokenizer", tok);
                    break;
                }
                case CheckpointFormat.HuggingFace:
                {
                    string folder = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path))!;
                    config = HfConfig.Read(Path.Combine(folder, "config.json"));
                    var files = Directory.GetFiles(folder, "*.safetensors");
                    var dtypes = files.SelectMany(f => SafetensorsFile.Read(f).Tensors).GroupBy(t => t.DType).Select(g => $"{g.Count()} {g.Key}");
                    Row("safetensors files", files.Length);
                    Row("tensors", string.Join(", ", dtypes));
                    break;
                }
                default:
                    config = Llama2cCheckpoint.ReadConfig(path);
                    Row("dtype", "F32");
                    break;
            }
            Row("architecture", $"Llama: dim {config.Dim}, hidden {config.HiddenDim}, {config.Layers} layers, {config.Heads} heads ({config.KvHeads} kv, head dim {config.HeadDim})");
            Row("vocabulary", config.VocabSize);
            Row("context", config.MaxSeqLen);
            Row("RoPE", $"theta {config.RopeTheta}{(config.RopeScaling is { } s ? $", {s.Kind} x{s.Factor}" : "")}");
            Row("output head", config.TiedEmbeddings ? "tied to the embedding" : "separate");
            Row("parameters", $"{config.ParameterCount:N0}");
        }
        console.Write(table);
        return 0;
    });
}
