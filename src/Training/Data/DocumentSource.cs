using System.Text.Json;

namespace UioLlm.Training.Data;

/// <summary>
/// The documents of a set of files and folders: a *.txt file is one document; a *.jsonl file holds one
/// JSON object per line whose "text" string is a document (blank lines are skipped); a folder contributes
/// every *.txt and *.jsonl file beneath it. Files are ordered by full path (ordinal) so every run sees the
/// same documents in the same order. Text is kept as stored apart from CRLF becoming LF.
/// </summary>
public sealed class DocumentSource
{
    private DocumentSource(IReadOnlyList<string> files) => Files = files;

    /// <summary>The files read, in reading order (full paths).</summary>
    public IReadOnlyList<string> Files { get; }

    /// <summary>Collects the files of <paramref name="paths"/> (files or folders); each must exist.</summary>
    /// <exception cref="FileNotFoundException">A path is neither a file nor a folder.</exception>
    /// <exception cref="DataFormatException">A named file is neither *.txt nor *.jsonl, or nothing was found.</exception>
    public static DocumentSource FromPaths(params IEnumerable<string> paths)
    {
        ArgumentNullException.ThrowIfNull(paths);
        var files = new SortedSet<string>(StringComparer.Ordinal);
        var given = paths.ToList();
        foreach (string path in given)
        {
            string full = Path.GetFullPath(path);
            if (Directory.Exists(full))
            {
                foreach (string file in Directory.EnumerateFiles(full, "*", SearchOption.AllDirectories))
                    if (IsDocumentFile(file)) files.Add(file);
            }
            else if (File.Exists(full))
            {
                if (!IsDocumentFile(full))
                    throw new DataFormatException(full, null, "not a document file: expected a .txt (one document) or .jsonl (one {\"text\": ...} object per line)");
                files.Add(full);
            }
            else throw new FileNotFoundException($"document file or folder not found: {path}", path);
        }
        if (files.Count == 0)
            throw new DataFormatException(string.Join(", ", given), null, "no .txt or .jsonl documents found");
        return new DocumentSource([.. files]);
    }

    /// <summary>Every document of every file, in order.</summary>
    public IEnumerable<Document> ReadAll() => Files.SelectMany(ReadFile);

    /// <summary>The documents of one file (*.txt: one; *.jsonl: one per non-blank line).</summary>
    /// <exception cref="DataFormatException">A JSON-lines line is not an object with a "text" string.</exception>
    public static IEnumerable<Document> ReadFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (IsJsonLines(path)) return ReadJsonLines(path);
        return [new Document(path, 0, NormaliseLineEnds(File.ReadAllText(path)))];
    }

    /// <summary><paramref name="text"/> with every CRLF turned into LF (nothing else changes).</summary>
    public static string NormaliseLineEnds(string text) => text.Contains('\r') ? text.Replace("\r\n", "\n", StringComparison.Ordinal) : text;

    private static IEnumerable<Document> ReadJsonLines(string path)
    {
        int lineNumber = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            yield return new Document(path, lineNumber, NormaliseLineEnds(TextField(path, lineNumber, line)));
        }
    }

    private static string TextField(string path, int lineNumber, string line)
    {
        JsonDocument json;
        try
        {
            json = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            throw new DataFormatException(path, lineNumber, $"not valid JSON ({e.Message})");
        }
        using (json)
        {
            if (json.RootElement.ValueKind != JsonValueKind.Object)
                throw new DataFormatException(path, lineNumber, $"expected a JSON object with a \"text\" string, found a {json.RootElement.ValueKind}");
            if (!json.RootElement.TryGetProperty("text", out var text))
                throw new DataFormatException(path, lineNumber, "the object has no \"text\" field");
            if (text.ValueKind != JsonValueKind.String)
                throw new DataFormatException(path, lineNumber, $"\"text\" must be a string, found a {text.ValueKind}");
            return text.GetString()!;
        }
    }

    private static bool IsJsonLines(string path) => path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase);

    private static bool IsDocumentFile(string path) =>
        IsJsonLines(path) || path.EndsWith(".txt", StringComparison.OrdinalIgnoreCase);
}
