using System.Globalization;
using System.Text;
using System.Text.Json;
using UioLlm.Model.Tokenizers;
using UioLlm.Training.Data;
using UioLlm.Training.Data.Synthetic;

namespace UioLlm.Training.Eval;

/// <summary>One bAbI question with the story sentences before it (questions removed), the answer and the supporting sentence numbers.</summary>
public sealed record BabiQuestion(string Task, IReadOnlyList<string> Facts, string Question, string Answer, IReadOnlyList<int> Supporting);

/// <summary>Reads bAbI v1.2 task files ("N sentence" lines; questions "N question?\tanswer\tsupporting ids"; N = 1 starts a story).</summary>
public static class BabiReader
{
    public static List<BabiQuestion> Read(string path, string task)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"bAbI file not found: {path}", path);
        var result = new List<BabiQuestion>();
        var story = new List<string>();
        int lineNumber = 0;
        foreach (var raw in File.ReadLines(path))
        {
            lineNumber++;
            string line = raw.TrimEnd('\r');
            if (line.Length == 0) continue;
            int space = line.IndexOf(' ');
            if (space <= 0 || !int.TryParse(line.AsSpan(0, space), NumberStyles.None, CultureInfo.InvariantCulture, out int id))
                throw new DataFormatException(path, lineNumber, $"expected 'N text' (a sentence number first), found '{Short(line)}'");
            if (id == 1) story.Clear();
            string text = line[(space + 1)..];
            var parts = text.Split('\t');
            if (parts.Length == 1)
            {
                story.Add(text.Trim());
                continue;
            }
            if (parts.Length < 3 || parts[1].Trim().Length == 0)
                throw new DataFormatException(path, lineNumber, $"a question line needs 'question\\tanswer\\tsupporting ids', found '{Short(line)}'");
            var supporting = parts[2].Split(' ', StringSplitOptions.RemoveEmptyEntries)
                .Select(s => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v
                    : throw new DataFormatException(path, lineNumber, $"supporting sentence ids must be numbers, found '{s}'")).ToList();
            result.Add(new BabiQuestion(task, story.ToList(), parts[0].Trim(), parts[1].Trim(), supporting));
        }
        if (result.Count == 0) throw new DataFormatException(path, null, "no question found (expected bAbI task lines)");
        return result;
    }

    private static string Short(string s) => s.Length > 60 ? s[..60] + "..." : s;
}

/// <summary>The BABILong prompt strings for one task (booydar/babilong's instruction, examples, post-prompt and template).</summary>
public sealed record BabiLongPrompt(string Instruction, string Examples, string PostPrompt, string Template)
{
    /// <summary>Reads DEFAULT_TEMPLATE and DEFAULT_PROMPTS[task] of longctx/babilong_prompts.json.</summary>
    public static BabiLongPrompt Load(string path, string task)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"BABILong prompts file not found: {path}", path);
        try
        {
            using var json = JsonDocument.Parse(File.ReadAllText(path));
            var root = json.RootElement;
            if (!root.TryGetProperty("DEFAULT_TEMPLATE", out var template) || template.ValueKind != JsonValueKind.String)
                throw new DataFormatException(path, null, "expected a DEFAULT_TEMPLATE string");
            if (!root.TryGetProperty("DEFAULT_PROMPTS", out var prompts) || !prompts.TryGetProperty(task, out var p) || p.ValueKind != JsonValueKind.Object)
                throw new DataFormatException(path, null, $"expected DEFAULT_PROMPTS.{task} (an object)");
            string Field(string name) => p.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()!
                : throw new DataFormatException(path, null, $"DEFAULT_PROMPTS.{task}.{name} must be a string");
            return new BabiLongPrompt(Field("instruction"), Field("examples"), Field("post_prompt"), template.GetString()!);
        }
        catch (JsonException e)
        {
            throw new DataFormatException(path, null, $"not valid JSON ({e.Message})");
        }
    }

    public string Format(string context, string question) => Template
        .Replace("{instruction}", Instruction, StringComparison.Ordinal)
        .Replace("{examples}", Examples, StringComparison.Ordinal)
        .Replace("{post_prompt}", PostPrompt, StringComparison.Ordinal)
        .Replace("{context}", context, StringComparison.Ordinal)
        .Replace("{question}", question, StringComparison.Ordinal);
}

/// <summary>
/// BABILong (Kuratov et al., 2024) built here: the facts of a bAbI qa1-qa5 question (test split) are scattered,
/// in order, at seeded positions through consecutive sentences of a public-domain book until the prompt (with the
/// BABILong instruction, examples and template, then "Answer:") reaches the length; correct when the answer word
/// appears in the first line of the continuation (case-insensitive), as BABILong's scorer checks the label.
/// </summary>
public sealed class BabiLongRetrieval : IRetrievalTask
{
    private readonly List<(string Task, List<BabiQuestion> Questions, BabiLongPrompt Prompt)> tasks = [];
    private readonly string[] sentences;
    private readonly ITokenizer tokenizer;
    private readonly PromptLength length;

    /// <param name="babiFolder">longctx/babi/en (qaN_*_test.txt).</param>
    /// <param name="promptsPath">longctx/babilong_prompts.json.</param>
    /// <param name="book">Noise text (public domain), split into sentences.</param>
    /// <param name="taskNames">Which of qa1..qa5 (default all five, taken in turn by seed).</param>
    public BabiLongRetrieval(string babiFolder, string promptsPath, string book, ITokenizer tokenizer, IReadOnlyList<string>? taskNames = null)
    {
        if (!Directory.Exists(babiFolder)) throw new DirectoryNotFoundException($"bAbI folder not found: {babiFolder}");
        foreach (var name in taskNames ?? ["qa1", "qa2", "qa3", "qa4", "qa5"])
        {
            if (name is not ("qa1" or "qa2" or "qa3" or "qa4" or "qa5"))
                throw new ArgumentException($"BABILong: task '{name}' is not one of qa1..qa5", nameof(taskNames));
            var file = Directory.GetFiles(babiFolder, $"{name}_*_test.txt").OrderBy(f => f, StringComparer.Ordinal).FirstOrDefault()
                ?? throw new FileNotFoundException($"BABILong: no {name}_*_test.txt in {babiFolder}");
            tasks.Add((name, BabiReader.Read(file, name), BabiLongPrompt.Load(promptsPath, name)));
        }
        sentences = Sentences(DocumentSource.NormaliseLineEnds(book));
        if (sentences.Length < 10) throw new ArgumentException($"BABILong: the noise book has only {sentences.Length} sentences", nameof(book));
        this.tokenizer = tokenizer;
        length = new PromptLength(tokenizer);
    }

    public string Name => "babilong";
    public bool UsesDepth => false;

    public RetrievalSample Sample(long seed, int target, double depth)
    {
        var random = new SeededRandom(seed, stream: 3);
        var (task, questions, prompt) = tasks[(int)(((seed % tasks.Count) + tasks.Count) % tasks.Count)];
        var q = questions[random.Next(questions.Count)];
        int start = random.Next(sentences.Length);
        var spots = Enumerable.Range(0, q.Facts.Count).Select(_ => random.NextDouble()).Order().ToArray();
        string Build(int noise)
        {
            var context = new StringBuilder();
            int fact = 0;
            for (int i = 0; i <= noise; i++)
            {
                // Fact f goes before noise sentence min(noise, floor(spot_f * (noise + 1))): in order, all placed.
                while (fact < q.Facts.Count && Math.Min(noise, (int)(spots[fact] * (noise + 1))) == i) context.Append(q.Facts[fact++]).Append(' ');
                if (i < noise) context.Append(sentences[(start + i) % sentences.Length]).Append(' ');
            }
            return prompt.Format(context.ToString().TrimEnd(), q.Question) + "\nAnswer:";
        }
        var (count, _) = length.LargestFitting(Build, 0, int.MaxValue, target, $"babilong {task}");
        return new RetrievalSample(tokenizer.Encode(Build(count), addBos: true), q.Answer, 24, double.NaN, $"{task}: {q.Question} -> {q.Answer}");
    }

    public bool IsCorrect(RetrievalSample sample, int[] generated)
    {
        string text = tokenizer.Decode(generated).TrimStart();
        int newline = text.IndexOf('\n');
        if (newline >= 0) text = text[..newline];
        return text.Contains(sample.Answer, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>Sentences of a text (split after . ! ? followed by whitespace), whitespace collapsed.</summary>
    public static string[] Sentences(string text)
    {
        var result = new List<string>();
        var current = new StringBuilder();
        for (int i = 0; i < text.Length; i++)
        {
            char ch = text[i];
            if (char.IsWhiteSpace(ch))
            {
                if (current.Length > 0 && current[^1] != ' ') current.Append(' ');
                continue;
            }
            current.Append(ch);
            if ((ch is '.' or '!' or '?') && (i + 1 == text.Length || char.IsWhiteSpace(text[i + 1])))
            {
                string s = current.ToString().Trim();
                if (s.Length > 1) result.Add(s);
                current.Clear();
            }
        }
        return [.. result];
    }
}
