using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Modules;
using UioLlm.Model.Tokenizers;

namespace UioLlm.Cli;

/// <summary>A mistake in what the user asked for: reported as one line, exit code 2, no stack trace.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>A model loaded for a command, with its tokenizer and the accelerator it lives on.</summary>
internal sealed class LoadedModel(Accelerator accelerator, LlamaWeights weights, ITokenizer tokenizer) : IDisposable
{
    public Accelerator Accelerator { get; } = accelerator;
    public LlamaWeights Weights { get; } = weights;
    public LlamaModel Model { get; } = new(weights);
    public ITokenizer Tokenizer { get; } = tokenizer;

    public void Dispose()
    {
        Weights.Dispose();
        Accelerator.Dispose();
    }
}

internal static class CliSupport
{
    /// <summary>
    /// Loads --model (any format) with its tokenizer on a new accelerator; refuses a tokenizer whose
    /// vocabulary does not match the model's.
    /// </summary>
    public static LoadedModel Open(string modelPath, string? tokenizerPath, int threads, bool keepQuantized = false, long memoryLimitBytes = 0)
    {
        RequireExists(modelPath, "--model");
        if (threads < 0) throw new UsageException($"--threads must be 0 (all cores) or a positive number, got {threads}");
        var tokenizer = TokenizerFor(modelPath, tokenizerPath);
        var accelerator = Accelerator.Create(AcceleratorKind.Auto, threads);
        accelerator.Memory.LimitBytes = memoryLimitBytes;
        try
        {
            var weights = ModelLoader.Load(modelPath, accelerator, keepQuantized);
            if (tokenizer.VocabSize != weights.Config.VocabSize)
            {
                weights.Dispose();
                throw new UsageException($"the tokenizer has {tokenizer.VocabSize} tokens but the model's vocabulary is {weights.Config.VocabSize}: pass the model's own tokenizer");
            }
            return new LoadedModel(accelerator, weights, tokenizer);
        }
        catch
        {
            accelerator.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Runs a command body; user-facing failures (bad paths, unreadable files, nonsense values) become one
    /// line on the error writer naming the command, and exit code 2.
    /// </summary>
    public static int Guarded(string command, TextWriter error, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (MemoryBudgetExceededException e)
        {
            error.WriteLine($"uio {command}: --max-memory: {e.Message}; raise --max-memory, or use shorter segments, fewer live segments (--window) or shorter contexts");
            return 2;
        }
        catch (Exception e) when (e is UsageException or ModelFormatException or FileNotFoundException or DirectoryNotFoundException
                                      or ArgumentException or InvalidOperationException or IOException or UnauthorizedAccessException
                                      or UioLlm.Training.CheckpointFormatException or UioLlm.Training.Data.DataFormatException)
        {
            error.WriteLine($"uio {command}: {OneLine(e.Message)}");
            return 2;
        }
    }

    /// <summary>A message on one line (argument exceptions append "(Parameter ...)" and "Actual value was ..." lines).</summary>
    public static string OneLine(string message) =>
        string.Join("; ", message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    /// <summary>Parses a --max-memory size: a number with an optional unit K, M, G or T (optionally followed by B or iB; binary units); a plain number is megabytes. Null or empty: no limit (0).</summary>
    public static long ParseMemory(string? text, string option = "--max-memory")
    {
        if (string.IsNullOrWhiteSpace(text)) return 0;
        string t = text.Trim().ToUpperInvariant();
        if (t.EndsWith("IB", StringComparison.Ordinal)) t = t[..^2];
        else if (t.EndsWith('B') && t.Length > 1 && char.IsLetter(t[^2])) t = t[..^1];
        long scale = 1L << 20;
        if (t.Length > 0 && char.IsLetter(t[^1]))
        {
            scale = t[^1] switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, 'T' => 1L << 40, _ => 0 };
            t = t[..^1];
        }
        if (scale == 0 || !double.TryParse(t, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double value)
            || !double.IsFinite(value) || value <= 0 || value * scale > long.MaxValue / 2)
            throw new UsageException($"{option}: '{text}' is not a memory size; expected e.g. 512M, 4G or 1.5G");
        return (long)(value * scale);
    }

    /// <summary>An output folder: refuses a path that is a file, and creates the folder (naming the option when that fails).</summary>
    public static string RequireOutputFolder(string path, string option)
    {
        if (File.Exists(path)) throw new UsageException($"{option}: '{path}' is a file; expected a folder (new or existing)");
        try
        {
            Directory.CreateDirectory(path);
            string probe = Path.Combine(path, $".uio-write-test-{Environment.ProcessId}");
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            throw new UsageException($"{option}: cannot create or write the folder '{path}': {OneLine(e.Message)}");
        }
        return path;
    }

    /// <summary>An input file: refuses a missing path and a folder.</summary>
    public static string RequireFile(string path, string option)
    {
        if (Directory.Exists(path)) throw new UsageException($"{option}: '{path}' is a folder; expected a file");
        if (!File.Exists(path)) throw new UsageException($"{option}: '{path}' does not exist");
        return path;
    }

    /// <summary>A finite positive number (learning rates, LoRA alpha).</summary>
    public static void RequirePositiveFinite(float value, string option)
    {
        if (!float.IsFinite(value) || value <= 0) throw new UsageException($"{option} must be a finite positive number, got {value.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
    }

    /// <summary>
    /// The tokenizer for a model: the one given, else the model's own (a GGUF vocabulary or a Hugging Face
    /// folder's tokenizer files); a llama2.c checkpoint holds none.
    /// </summary>
    public static ITokenizer TokenizerFor(string modelPath, string? tokenizerPath)
    {
        if (tokenizerPath is not null) return Tokenizer.Load(RequireExists(tokenizerPath, "--tokenizer"));
        var format = ModelLoader.Detect(modelPath);
        if (format == CheckpointFormat.Llama2c)
            throw new UsageException($"'{modelPath}' is a llama2.c checkpoint, which holds no tokenizer: pass --tokenizer (tokenizer.bin, tokenizer.model, tokenizer.json or a .gguf)");
        string source = format == CheckpointFormat.HuggingFace && File.Exists(modelPath) ? Path.GetDirectoryName(Path.GetFullPath(modelPath))! : modelPath;
        return Tokenizer.Load(source);
    }

    /// <summary>A file of the shared test data (UIOLLM_DATA, else ../shared/data), or null when absent.</summary>
    public static string? FindData(params string[] parts)
    {
        foreach (var root in new[] { Environment.GetEnvironmentVariable("UIOLLM_DATA"), Path.Combine("..", "shared", "data") })
        {
            if (string.IsNullOrEmpty(root)) continue;
            string path = Path.Combine([root, .. parts]);
            if (File.Exists(path)) return path;
        }
        return null;
    }

    /// <summary>A folder of the shared test data (UIOLLM_DATA, else ../shared/data), or null when absent.</summary>
    public static string? FindDataFolder(params string[] parts)
    {
        foreach (var root in new[] { Environment.GetEnvironmentVariable("UIOLLM_DATA"), Path.Combine("..", "shared", "data") })
        {
            if (string.IsNullOrEmpty(root)) continue;
            string path = Path.Combine([root, .. parts]);
            if (Directory.Exists(path)) return path;
        }
        return null;
    }

    public static string RequireExists(string path, string option)
    {
        if (!File.Exists(path) && !Directory.Exists(path))
            throw new UsageException($"{option}: '{path}' does not exist");
        return path;
    }

    public static void RequirePositive(int value, string option)
    {
        if (value <= 0) throw new UsageException($"{option} must be a positive number, got {value}");
    }
}
