using System.Text.RegularExpressions;
using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Support;
using UioLlm.Training.Data;
using UioLlm.Training.Data.Synthetic;

namespace UioLlm.Tests.Training;

public sealed class SyntheticTaskTests
{
    /// <summary>Strings shaped like the shared template (tests that need no data use these).</summary>
    private static readonly PasskeyTemplate Template = new(
        "Find the important info in the text below.",
        " The grass is green. The sky is blue.",
        " The pass key is {passkey}. Remember it. {passkey} is the pass key.",
        " What is the pass key? The pass key is");

    private static string Repeat(string unit, int n) => string.Concat(Enumerable.Repeat(unit, n));

    // ---- passkey ----

    [DataFact]
    public void TemplateIsReadFromTheSharedFile()
    {
        var template = PasskeyTemplate.Load(TestData.File("longctx", "passkey_and_niah_templates.json"));
        Assert.StartsWith("There is an important info hidden", template.Prefix);
        Assert.Equal(" The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.", template.JunkUnit);
        Assert.Equal(" The pass key is 123. Remember it. 123 is the pass key.", template.Needle("123"));
        Assert.Equal(" What is the pass key? The pass key is", template.Suffix);
    }

    [Theory]
    [InlineData("[1, 2]", "expected a top-level object")]
    [InlineData("{\"passkey_llama_cpp\": {\"prefix\": \"p\", \"junk_unit\": \"j\", \"suffix\": \"s\"}}", "needle_template must be a string")]
    [InlineData("{\"passkey_llama_cpp\": {\"prefix\": \"p\", \"junk_unit\": \"j\", \"needle_template\": \"no key\", \"suffix\": \"s\"}}", "must contain {passkey}")]
    [InlineData("{\"passkey_llama_cpp\": ", "not valid JSON")]
    public void BadTemplateFilesAreRejectedNamingTheFile(string content, string expected)
    {
        using var temp = new TempFolder();
        string file = temp.Write("templates.json", content);
        var e = Assert.Throws<DataFormatException>(() => PasskeyTemplate.Load(file));
        Assert.Equal(file, e.FilePath);
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.3)]
    [InlineData(0.5)]
    [InlineData(1.0)]
    public void JunkPromptFollowsTheTemplateRuleWithTheKeyAtTheDepth(double depth)
    {
        const int target = 3000;
        var sample = new PasskeyTask(Template).Generate(seed: 11, target, depth);
        int n = sample.FillerUnits, before = sample.UnitsBeforeNeedle;
        Assert.Equal((int)Math.Round(depth * n, MidpointRounding.AwayFromZero), before);
        string needle = Template.Needle(sample.Answer);
        string expected = Template.Prefix + Repeat(Template.JunkUnit, before) + needle + Repeat(Template.JunkUnit, n - before) + Template.Suffix;
        Assert.Equal(expected, sample.Prompt);
        Assert.Equal(Template.Prefix.Length + before * Template.JunkUnit.Length, sample.NeedleOffset);
        Assert.Equal(needle, sample.Prompt.Substring(sample.NeedleOffset, needle.Length));
        Assert.InRange(sample.Depth, depth - 1.0 / n, depth + 1.0 / n);
        // n is the most that fits: one more unit would exceed the target.
        Assert.Equal(sample.Prompt.Length, sample.Length);
        Assert.InRange(sample.Length, target - Template.JunkUnit.Length + 1, target);
        Assert.Matches("^[1-9][0-9]{4}$", sample.Answer);
    }

    [Fact]
    public void PasskeyIsDeterministicPerSeedAndIndependentOfLengthAndDepth()
    {
        var task = new PasskeyTask(Template);
        var a = task.Generate(5, 2000, 0.25);
        Assert.Equal(a, task.Generate(5, 2000, 0.25));
        Assert.Equal(a.Answer, task.Generate(5, 900, 0.75).Answer);
        var answers = Enumerable.Range(0, 20).Select(s => task.Generate(s, 500, 0.5, digits: 7).Answer).ToList();
        Assert.True(answers.Distinct().Count() >= 19, string.Join(",", answers));
        Assert.All(answers, k => Assert.Equal(7, k.Length));
    }

    [Fact]
    public void TooShortATargetOrABadDepthIsRejected()
    {
        var task = new PasskeyTask(Template);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => task.Generate(1, 50, 0.5));
        Assert.Contains("characters", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => task.Generate(1, 5000, 1.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => task.Generate(1, 5000, double.NaN));
    }

    [Fact]
    public void BookHaystackKeepsTheTextAroundTheNeedle()
    {
        string book = "Call me Ishmael.  Some years ago\nnever mind how long precisely\n\nhaving little or no money in my purse.";
        var haystack = Haystack.FromText(book, "book");
        var sample = new PasskeyTask(Template, haystack).Generate(seed: 2, targetLength: 700, depth: 0.5);
        string filler = sample.Prompt[Template.Prefix.Length..^Template.Suffix.Length].Replace(sample.Needle, "");
        // The filler is the book's words in order from a seeded word, wrapping round, with their spacing.
        string cycle = " " + book.TrimStart() + " " + book.TrimStart();
        Assert.Contains(filler.TrimStart()[..40], cycle);
        Assert.Equal(sample.UnitsBeforeNeedle, Regex.Matches(sample.Prompt[..sample.NeedleOffset][Template.Prefix.Length..], @"\S+").Count);
        Assert.Equal(2, Regex.Matches(sample.Prompt, sample.Answer).Count);
    }

    [DataFact]
    public void TokenTargetIsMetWithARealTokenizerAndMobyDick()
    {
        var tokenizer = Tokenizer.Load(TestData.File("models", "stories260K", "tok512.bin"));
        var template = PasskeyTemplate.Load(TestData.File("longctx", "passkey_and_niah_templates.json"));
        var task = new PasskeyTask(template, Haystack.FromFile(TestData.File("text", "moby_dick.txt")), tokenizer);
        const int target = 2048;
        var sample = task.Generate(seed: 9, target, depth: 0.4);
        int tokens = tokenizer.Encode(sample.Prompt, addBos: true).Length;
        Assert.Equal(tokens, sample.Length);
        Assert.InRange(tokens, target - 16, target);
        Assert.StartsWith(template.Prefix, sample.Prompt);
        Assert.EndsWith(template.Suffix, sample.Prompt);
        Assert.Equal(template.Needle(sample.Answer), sample.Prompt.Substring(sample.NeedleOffset, sample.Needle.Length));
        double fillerChars = sample.Prompt.Length - template.Prefix.Length - template.Suffix.Length - sample.Needle.Length;
        Assert.InRange((sample.NeedleOffset - template.Prefix.Length) / fillerChars, 0.35, 0.45);
    }

    // ---- key-value recall ----

    private static readonly Regex PairLine = new(@"^([0-9a-f-]+): ([0-9a-f-]+)$", RegexOptions.Multiline);

    [Fact]
    public void KeyValueAnswerIsTheQueriedKeysValueInThePrompt()
    {
        var sample = new KeyValueRecallTask().Generate(seed: 4, targetLength: 4000);
        var pairs = PairLine.Matches(sample.Prompt).Select(m => (Key: m.Groups[1].Value, Value: m.Groups[2].Value)).ToList();
        Assert.Equal(sample.Pairs, pairs.Count);
        Assert.Equal(pairs.Count, pairs.Select(p => p.Key).Distinct().Count());
        Assert.Equal((sample.Key, sample.Answer), pairs[sample.QueriedPair]);
        Assert.Contains($"{sample.Key}: {sample.Answer}\n", sample.Prompt);
        Assert.StartsWith(KeyValueRecallTask.Instruction, sample.Prompt);
        Assert.EndsWith(KeyValueRecallTask.Question(sample.Key), sample.Prompt);
        Assert.Matches("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", sample.Answer);
        Assert.Equal(sample.Prompt.Length, sample.Length);
        Assert.InRange(sample.Length, 4000 - 75, 4000);
    }

    [Fact]
    public void KeyValueIsDeterministicAndDepthPicksThePair()
    {
        var task = new KeyValueRecallTask(keyShape: new HexShape(6), valueShape: new HexShape(4, 4));
        var a = task.Generate(8, 1500);
        Assert.Equal(a, task.Generate(8, 1500));
        Assert.NotEqual(a.Prompt, task.Generate(9, 1500).Prompt);
        // A shorter prompt of the same seed is a prefix of the same pair list.
        var shorter = task.Generate(8, 600, queryDepth: 0);
        Assert.StartsWith(shorter.Prompt[..shorter.Prompt.LastIndexOf('\n', shorter.Prompt.Length - 2)], a.Prompt);
        Assert.Equal(0, shorter.QueriedPair);
        Assert.Equal(a.Pairs - 1, task.Generate(8, 1500, queryDepth: 1).QueriedPair);
        Assert.Equal(a.Pairs / 2, task.Generate(8, 1500, queryDepth: 0.5).QueriedPair, tolerance: 1);
    }

    [Fact]
    public void KeyValuePairsStopAtTheNumberOfDistinctKeys()
    {
        var sample = new KeyValueRecallTask(keyShape: new HexShape(1), valueShape: new HexShape(2)).Generate(3, 100_000);
        Assert.Equal(16, sample.Pairs);
        Assert.Throws<ArgumentOutOfRangeException>(() => new KeyValueRecallTask().Generate(3, 100));
    }

    [DataFact]
    public void KeyValueTokenTargetIsMetWithARealTokenizer()
    {
        var tokenizer = Tokenizer.Load(TestData.File("models", "stories260K", "tok512.bin"));
        var sample = new KeyValueRecallTask(tokenizer).Generate(seed: 1, targetLength: 1024);
        int tokens = tokenizer.Encode(sample.Prompt, addBos: true).Length;
        Assert.Equal(tokens, sample.Length);
        Assert.InRange(tokens, 1024 - 60, 1024);
        Assert.Contains($"{sample.Key}: {sample.Answer}\n", sample.Prompt);
    }
}
