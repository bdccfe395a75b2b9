using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Tokenizers;

namespace UioLlm.Cli;

/// <summary>A mistake in what the user asked for: reported as one line, exit code 2, no stack trace.</summary>
internal sealed class UsageException(string message) : Exception(message);

internal static class CliSupport
{
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
        catch (Exception e) when (e is UsageException or ModelFormatException or FileNotFoundException or DirectoryNotFoundException
                                      or ArgumentException or InvalidOperationException or IOException or UnauthorizedAccessException
                                      or UioLlm.Training.CheckpointFormatException or UioLlm.Training.Data.DataFormatException)
        {
            error.WriteLine($"uio {command}: {e.Message}");
            return 2;
        }
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
