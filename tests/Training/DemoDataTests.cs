using UioLlm.Training;
using UioLlm.Training.Data;
using UioLlm.Training.Demo;

namespace UioLlm.Tests.Training;

/// <summary>The demo's vocabulary and seeded passkey documents.</summary>
public sealed class DemoDataTests
{
    private static readonly CharVocabulary Vocabulary = new();

    [Fact]
    public void VocabularyTokenizesDigitsInChunksOfThreeAndRoundTrips()
    {
        Assert.Equal(3 + CharVocabulary.Characters.Length + 1000, Vocabulary.VocabSize);
        var ids = Vocabulary.Encode("ab 73914.", addBos: true);
        // BOS, a, b, space, "739", 1, 4, "."
        Assert.Equal(8, ids.Length);
        Assert.Equal(CharVocabulary.BosId, ids[0]);
        Assert.Equal(Vocabulary.IdOf('1'), ids[5]);
        Assert.Equal(Vocabulary.IdOf('4'), ids[6]);
        Assert.True(ids[4] >= 3 + CharVocabulary.Characters.Length, "a three-digit chunk is one number token");
        Assert.Equal("739", Vocabulary.Decode(ids.AsSpan(4, 1)));
        Assert.Equal("ab 73914.", Vocabulary.Decode(ids));
        Assert.Equal(1, CharVocabulary.DigitTokens(3));
        Assert.Equal(3, CharVocabulary.DigitTokens(5));
        Assert.Equal(2, CharVocabulary.DigitTokens(6));
    }

    [Fact]
    public void VocabularyGivesEveryCharacterItsOwnIdAndMarksTheRest()
    {
        var ids = CharVocabulary.Characters.Select(Vocabulary.IdOf).ToList();
        Assert.Equal(ids.Count, ids.Distinct().Count());
        Assert.DoesNotContain(CharVocabulary.UnkId, ids);
        Assert.Equal([CharVocabulary.UnkId], Vocabulary.Encode("é"));
        Assert.Equal("\uFFFD", Vocabulary.Decode([CharVocabulary.UnkId]));
        Assert.Equal("", Vocabulary.Decode([CharVocabulary.BosId, CharVocabulary.EosId]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Vocabulary.Decode([Vocabulary.VocabSize]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Vocabulary.Decode([-1]));
    }

    [Fact]
    public void FillerHasTheExactLengthNoDigitsAndDependsOnTheSeed()
    {
        string a = PasskeyDocuments.Filler(new SeededRandom(1), 300);
        Assert.Equal(300, a.Length);
        Assert.DoesNotContain(a, char.IsAsciiDigit);
        Assert.Equal(a, PasskeyDocuments.Filler(new SeededRandom(1), 300));
        Assert.NotEqual(a, PasskeyDocuments.Filler(new SeededRandom(2), 300));
        Assert.Equal("", PasskeyDocuments.Filler(new SeededRandom(1), 0));
    }

    [Fact]
    public void DistractorFillerHasTheExactTokenCountAndRandomNumbers()
    {
        var random = new SeededRandom(4);
        for (int length = 0; length < 200; length += 7)
        {
            string text = PasskeyDocuments.Filler(random, length, distractorShare: 0.5);
            Assert.Equal(length, Vocabulary.Encode(text).Length);
        }
        string long1 = PasskeyDocuments.Filler(new SeededRandom(5), 2000, distractorShare: 0.5);
        var numbers = System.Text.RegularExpressions.Regex.Matches(long1, "[0-9]+").Select(m => m.Value).ToList();
        Assert.True(numbers.Distinct().Count() > 10, "distractor numbers vary");
        Assert.DoesNotContain('#', long1);
        // Documents with distractors still have the right length, key and answer.
        var documents = new PasskeyDocuments(Vocabulary, 3, distractorShare: 0.5);
        for (int i = 0; i < 20; i++)
        {
            var d = documents.AtDepth(i, 200, i / 19.0);
            Assert.Equal(200, d.Tokens.Length);
            Assert.Equal(d.Key, Vocabulary.Decode(d.Tokens.AsSpan(d.Prompt.Length)));
            Assert.Equal(PasskeyDocuments.NeedlePrefix + d.Key, Vocabulary.Decode(d.Tokens.AsSpan(d.NeedleOffset, PasskeyDocuments.NeedlePrefix.Length + 1)));
        }
    }

    [Theory]
    [InlineData(3, 64, 1, true)]
    [InlineData(3, 64, 0, false)]
    [InlineData(5, 200, 90, true)]
    public void ComposedDocumentsHoldTheNeedleWhereAskedAndEndWithTheAnswer(int digits, int total, int offset, bool bos)
    {
        var documents = new PasskeyDocuments(Vocabulary, digits);
        var d = documents.Compose(new SeededRandom(7), total, offset, bos);
        Assert.Equal(total, d.Tokens.Length);
        Assert.Equal(digits, d.Key.Length);
        Assert.Equal(bos, d.Tokens[0] == CharVocabulary.BosId);
        string text = Vocabulary.Decode(d.Tokens);
        Assert.Equal(Vocabulary.Decode(d.Tokens.AsSpan(offset)), text[(offset - (bos ? 1 : 0))..]);
        Assert.StartsWith(PasskeyDocuments.NeedlePrefix + d.Key + ". ", Vocabulary.Decode(d.Tokens.AsSpan(offset)));
        Assert.EndsWith(documents.Question, Vocabulary.Decode(d.Prompt));
        Assert.Equal(d.Key, Vocabulary.Decode(d.Tokens.AsSpan(d.Prompt.Length)));
        Assert.Equal(CharVocabulary.DigitTokens(digits), d.AnswerTokens);
    }

    [Fact]
    public void DepthPlacesTheNeedleFromTheStartToJustBeforeTheQuestion()
    {
        var documents = new PasskeyDocuments(Vocabulary, 3);
        int total = 256;
        var first = documents.AtDepth(5, total, 0);
        var last = documents.AtDepth(5, total, 1);
        Assert.Equal(1, first.NeedleOffset);
        Assert.Equal(documents.MaxNeedleOffset(total, bos: true), last.NeedleOffset);
        Assert.EndsWith(PasskeyDocuments.NeedlePrefix + last.Key + ". " + documents.Question, Vocabulary.Decode(last.Prompt));
        Assert.InRange(documents.AtDepth(5, total, 0.5).NeedleOffset, total / 2 - 40, total / 2 + 10);
        Assert.Equal(first.Tokens, documents.AtDepth(5, total, 0).Tokens);
        Assert.NotEqual(first.Tokens, documents.AtDepth(6, total, 0).Tokens);
        Assert.Throws<ArgumentOutOfRangeException>(() => documents.AtDepth(5, total, 1.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => documents.AtDepth(5, documents.FixedLength(bos: true) - 1, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => documents.Compose(new SeededRandom(1), total, documents.MaxNeedleOffset(total, true) + 1, bos: true));
    }

    [Fact]
    public void TrainingStreamPutsTheNeedleTheDrawnDistanceBeforeTheQuestion()
    {
        const int l = 32;
        var documents = new PasskeyDocuments(Vocabulary, 3, distractorShare: 0.5);
        var data = new PasskeyTrainingData(documents, seed: 3, l, minDistance: 3, maxDistance: 6, extraSegments: 2);
        Assert.Equal(9, data.MaxSegments);
        var distances = new HashSet<int>();
        for (int i = 0; i < 60; i++)
        {
            var (d, distance) = data.Document(i);
            distances.Add(distance);
            Assert.InRange(distance, 3, 6);
            Assert.Equal(0, (d.Tokens.Length - 1) % l);
            int segments = (d.Tokens.Length - 1) / l;
            Assert.InRange(segments, distance + 1, distance + 3);
            // The needle lies wholly inside segment q - d; the question and the answer end the last segment.
            Assert.Equal(segments - 1 - distance, d.NeedleOffset / l);
            Assert.Equal(segments - 1 - distance, (d.NeedleOffset + documents.NeedleLength - 1) / l);
            Assert.Equal(d.Key, Vocabulary.Decode(d.Tokens.AsSpan(d.Prompt.Length)));
            Assert.EndsWith(documents.Question, Vocabulary.Decode(d.Prompt));
        }
        Assert.Equal(4, distances.Count);

        // Only the answer is scored.
        var (tokens, targets) = data.NextWithTargets();
        Assert.Equal(tokens.Length - 1, targets.Length);
        Assert.Equal(1, targets.Count(t => t != UioLlm.Training.Estimators.SegmentLoop.IgnoreTarget));
        Assert.Equal(tokens[^1], targets[^1]);

        data.Position = new TrainingDataPosition(0, 0);
        var first = Enumerable.Range(0, 3).Select(_ => data.Next()).ToList();
        data.Position = new TrainingDataPosition(0, 0);
        Assert.Equal(first, Enumerable.Range(0, 3).Select(_ => data.Next()).ToList());
        Assert.Equal(new TrainingDataPosition(0, 3), data.Position);
        Assert.Throws<ArgumentOutOfRangeException>(() => data.Position = new TrainingDataPosition(1, 0));
        Assert.Throws<ArgumentException>(() => new PasskeyTrainingData(documents, 0, l, minDistance: 0, maxDistance: 5));
        Assert.Throws<ArgumentException>(() => new PasskeyTrainingData(documents, 0, l, minDistance: 4, maxDistance: 3));
        Assert.Throws<ArgumentException>(() => new PasskeyTrainingData(documents, 0, segmentLength: 12, minDistance: 1, maxDistance: 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => PasskeyTrainingData.AtDistance(documents, 1, l, segments: 3, distance: 3));
    }

    [Fact]
    public void RecallDrillsRepeatEachKeysValue()
    {
        var drills = new RecallDrills(Vocabulary);
        for (int seed = 0; seed < 20; seed++)
        {
            var ids = drills.Drill(seed, 65);
            Assert.Equal(65, ids.Length);
            Assert.Equal(ids, drills.Drill(seed, 65));
            string text = Vocabulary.Decode(ids).TrimEnd();
            var pairs = text.Split(' ', StringSplitOptions.RemoveEmptyEntries).Where(p => p.Length == 4).ToList();
            Assert.True(pairs.Count >= 15, text);
            // A key keeps its value within a drill, and keys repeat.
            foreach (var group in pairs.GroupBy(p => p[0])) Assert.Single(group.Select(p => p[1..]).Distinct());
            Assert.True(pairs.Select(p => p[0]).Distinct().Count() < pairs.Count, "keys repeat");
        }
        Assert.NotEqual(drills.Drill(1, 65), drills.Drill(2, 65));
    }

    [Fact]
    public void SettingsRefuseShapesThatCannotWork()
    {
        DemoSettings.Default.Validate();
        DemoSettings.Quick.Validate();
        Assert.Throws<ArgumentOutOfRangeException>(() => (DemoSettings.Quick with { Threads = -1 }).Validate());
        Assert.Throws<ArgumentException>(() => (DemoSettings.Quick with { MemoryTokens = 5 }).Validate());
        Assert.Throws<ArgumentException>(() => (DemoSettings.Quick with { Window = 16, MemoryTokens = 4 }).Validate());
        Assert.Throws<ArgumentException>(() => (DemoSettings.Quick with { SegmentLength = 96 }).Validate());
        Assert.Throws<ArgumentException>(() => (DemoSettings.Quick with { EvalWindows = [] }).Validate());
        Assert.Throws<ArgumentException>(() => (DemoSettings.Quick with { Depths = [1.5] }).Validate());
        Assert.Throws<ArgumentException>(() => (DemoSettings.Quick with { Curriculum = [2, 1] }).Validate());
        Assert.Throws<ArgumentException>(() => (DemoSettings.Quick with { Curriculum = [1, 2], EstimatorWindow = 2 }).Validate());
        // The position budget: 31 memories x n = 1 row + l = 32 local tokens fit a window of 64, 40 do not.
        var budget = Assert.Throws<ArgumentException>(() => (DemoSettings.Default with { Curriculum = [1, 2, 4, 8, 39] }).Validate());
        Assert.Contains("position", budget.Message + " positions");
        Assert.Contains("64", budget.Message);
        Assert.Equal(33 * 32, DemoSettings.Default.BudgetTokens);
        Assert.True(DemoSettings.Default.EvalWindows.Max() * DemoSettings.Default.Window <= DemoSettings.Default.BudgetTokens,
            "the default evaluation stays inside UIO's position budget");
    }
}
