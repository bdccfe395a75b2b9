namespace UioLlm.Model;

/// <summary>
/// A model, weights or tokenizer file that cannot be read: wrong magic, truncated data, a size or offset
/// that does not fit, a missing tensor. The message names the file and what was expected.
/// </summary>
public sealed class ModelFormatException : Exception
{
    public ModelFormatException(string file, string message, Exception? inner = null)
        : base($"{file}: {message}", inner)
    {
        File = file;
    }

    /// <summary>The file (or folder) that was being read.</summary>
    public string File { get; }
}
