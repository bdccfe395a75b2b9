namespace UioLlm.Training.Data;

/// <summary>A data file that cannot be read as documents: names the file and, where known, the 1-based line.</summary>
public sealed class DataFormatException : Exception
{
    public DataFormatException(string path, int? line, string message)
        : base(line is null ? $"{path}: {message}" : $"{path}, line {line}: {message}")
    {
        FilePath = path;
        Line = line;
    }

    /// <summary>The offending file.</summary>
    public string FilePath { get; }

    /// <summary>The 1-based line of the problem, or null when it concerns the whole file.</summary>
    public int? Line { get; }
}
