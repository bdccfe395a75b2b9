namespace UioLlm.Training.Data;

/// <summary>One training document.</summary>
/// <param name="File">The file it came from.</param>
/// <param name="Line">Its 1-based line in a JSON-lines file; 0 for a whole-file document.</param>
/// <param name="Text">Its text, as stored except that CRLF line ends are normalised to LF.</param>
public sealed record Document(string File, int Line, string Text)
{
    /// <summary>"file" or "file:line", for messages.</summary>
    public string Source => SourceName(File, Line);

    /// <summary>"file" for line 0, else "file:line".</summary>
    public static string SourceName(string file, int line) => line == 0 ? file : $"{file}:{line}";
}
