using System.Text;
using System.Text.Json;
using UioLlm.Model.Tokenizers;
using UioLlm.Training.Data;
using UioLlm.Training.Data.Synthetic;

namespace UioLlm.Training.Eval;

/// <summary>One retrieval prompt: token ids (BOS included), the expected answer, how many tokens to generate, and where the needle sits.</summary>
/// <param name="Depth">The needle's depth in [0, 1] (NaN where the task scatters several facts, as BABILong does).</param>
/// <param name="Detail">Free text recorded with the sample (e.g. the bAbI task).</param>
public sealed record RetrievalSample(int[] Prompt, string Answer, int MaxNewTokens, double Depth, string Detail = "");

/// <summary>
/// A retrieval task the harness runs for every method, length and depth: it makes seeded prompts and scores a
/// greedy continuation. Passkey, needle-in-a-haystack and BABILong are built in; a caller with its own data
/// (the built-in demo's vocabulary) uses <see cref="DelegateRetrievalTask"/>.
/// </summary>
public interface IRetrievalTask
{
    /// <summary>Short name (passkey, niah, babilong): file names and table titles.</summary>
    string Name { get; }

    /// <summary>Whether the depth argument means something (false: one row per length only).</summary>
    bool UsesDepth { get; }

    /// <summary>The prompt for <paramref name="seed"/>, at most <paramref name="length"/> tokens, needle at <paramref name="depth"/>.</summary>
    RetrievalSample Sample(long seed, int length, double depth);

    /// <summary>Whether the generated token ids answer the sample.</summary>
    bool IsCorrect(RetrievalSample sample, int[] generated);
}

/// <summary>A retrieval task from two functions (for callers with their own prompts and scoring).</summary>
public sealed class DelegateRetrievalTask(string name, bool usesDepth, Func<long, int, double, RetrievalSample> sample,
    Func<RetrievalSample, int[], bool> isCorrect) : IRetrievalTask
{
    public string Name { get; } = name;
    public bool UsesDepth { get; } = usesDepth;
    public RetrievalSample Sample(long seed, int length, double depth) => sample(seed, length, depth);
    public bool IsCorrect(RetrievalSample s, int[] generated) => isCorrect(s, generated);
}

/// <summary>llama.cpp's passkey prompt (templates in longctx/passkey_and_niah_templates.json) in a book or junk haystack; correct when the continuation contains the digits.</summary>
public sealed class PasskeyRetrieval(PasskeyTemplate template, Haystack? haystack, ITokenizer tokenizer, int digits = 5) : IRetrievalTask
{
    private readonly PasskeyTask task = new(template, haystack, tokenizer);

    public string Name => "passkey";
    public bool UsesDepth => true;

    public RetrievalSample Sample(long seed, int length, double depth)
    {
        var s = task.Generate(seed, length, depth, digits);
        return new RetrievalSample(tokenizer.Encode(s.Prompt, addBos: true), s.Answer, tokenizer.Encode(" " + s.Answer).Length + 2, s.Depth);
    }

    public bool IsCorrect(RetrievalSample sample, int[] generated) => tokenizer.Decode(generated).Contains(sample.Answer, StringComparison.Ordinal);
}

/// <summary>
/// Needle in a haystack (gkamradt's needle and question, in longctx/passkey_and_niah_templates.json) in a
/// public-domain book: the needle sentence at a depth of the book text, then the question and the answer's
/// opening words, which the model continues; correct when the continuation contains the needle's key phrase.
/// </summary>
public sealed class NeedleRetrieval : IRetrievalTask
{
    private readonly Haystack haystack;
    private readonly ITokenizer tokenizer;
    private readonly PromptLength length;

    public NeedleRetrieval(string needle, string question, Haystack haystack, ITokenizer tokenizer)
    {
        Needle = needle;
        Question = question;
        this.haystack = haystack;
        this.tokenizer = tokenizer;
        length = new PromptLength(tokenizer);
        (AnswerLead, Answer) = Split(needle, question);
    }

    public string Name => "niah";
    public bool UsesDepth => true;
    public string Needle { get; }
    public string Question { get; }

    /// <summary>The needle's words up to where the answer starts ("The best thing to do in San Francisco is").</summary>
    public string AnswerLead { get; }

    /// <summary>The phrase scored ("eat a sandwich").</summary>
    public string Answer { get; }

    /// <summary>Reads the "niah_gkamradt" object (needle, retrieval_question) of a templates file.</summary>
    public static NeedleRetrieval Load(string templatesPath, Haystack haystack, ITokenizer tokenizer)
    {
        if (!File.Exists(templatesPath)) throw new FileNotFoundException($"needle template file not found: {templatesPath}", templatesPath);
        try
        {
            using var json = JsonDocument.Parse(File.ReadAllText(templatesPath));
            if (!json.RootElement.TryGetProperty("niah_gkamradt", out var node) || node.ValueKind != JsonValueKind.Object)
                throw new DataFormatException(templatesPath, null, "expected a top-level object with a \"niah_gkamradt\" object");
            string Field(string name) => node.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && v.GetString()!.Trim().Length > 0
                ? v.GetString()! : throw new DataFormatException(templatesPath, null, $"niah_gkamradt.{name} must be a non-empty string");
            return new NeedleRetrieval(Field("needle"), Field("retrieval_question"), haystack, tokenizer);
        }
        catch (JsonException e)
        {
            throw new DataFormatException(templatesPath, null, $"not valid JSON ({e.Message})");
        }
    }

    /// <summary>The question "What is X?" and the needle "X is Y." give the lead "X is" and the answer's first three words of Y.</summary>
    private static (string Lead, string Answer) Split(string needle, string question)
    {
        string n = needle.Trim().TrimEnd('.');
        int at = n.IndexOf(" is ", StringComparison.Ordinal);
        if (at < 0) throw new ArgumentException($"needle '{needle.Trim()}' has no ' is ' to split into a lead and an answer", nameof(needle));
        var words = n[(at + 4)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        _ = question;
        return (n[..(at + 3)], string.Join(' ', words.Take(3)));
    }

    public RetrievalSample Sample(long seed, int target, double depth)
    {
        if (!(depth >= 0 && depth <= 1)) throw new ArgumentOutOfRangeException(nameof(depth), depth, "depth must lie in [0, 1]");
        var random = new SeededRandom(seed, stream: 2);
        int start = haystack.Start(random);
        string suffix = $"\n\nQuestion: {Question}\nAnswer: {AnswerLead}";
        string Build(int units)
        {
            var text = new StringBuilder();
            int before = (int)Math.Round(depth * units, MidpointRounding.AwayFromZero);
            for (int i = 0; i <= units; i++)
            {
                if (i == before) text.Append(' ').Append(Needle.Trim());
                if (i < units) text.Append(haystack.Unit(start, i));
            }
            return text.Append(suffix).ToString();
        }
        var (count, _) = length.LargestFitting(Build, 0, int.MaxValue, target, "niah");
        return new RetrievalSample(tokenizer.Encode(Build(count), addBos: true), Answer, tokenizer.Encode(" " + Answer).Length + 3,
            count == 0 ? 0 : Math.Round(depth * count, MidpointRounding.AwayFromZero) / count);
    }

    public bool IsCorrect(RetrievalSample sample, int[] generated) =>
        tokenizer.Decode(generated).Contains(sample.Answer, StringComparison.OrdinalIgnoreCase);
}
