using UioLlm.Model.Tokenizers;
using UioLlm.Training.Compare;
using UioLlm.Training.Demo;
using UioLlm.Tests.Cli;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Training.Compare;

/// <summary>The books comparison: Gutenberg bodies, cached rows, the quick run end to end, and its errors.</summary>
public sealed class BooksCompareTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), "uiollm-books-tests-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }

    [Fact]
    public void TheBodyLiesBetweenTheGutenbergMarkers()
    {
        string text = "The Project Gutenberg EBook of X\r\n\r\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n\r\nCHAPTER I\r\nIt was. END OF THE FIRST EPOCH.\r\n"
            + "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nlicence text\r\n";
        Assert.Equal("CHAPTER I\nIt was. END OF THE FIRST EPOCH.", BookTexts.Body(text));
        // Without a space after the stars, as some books write them.
        Assert.Equal("body", BookTexts.Body("head\n***START OF THE PROJECT GUTENBERG EBOOK Y***\nbody\n***END OF THE PROJECT GUTENBERG EBOOK Y***\ntail"));
        // No markers: the whole text; a marker only at the start: the rest.
        Assert.Equal("CHAPTER 1. Loomings.\nCall me Ishmael.", BookTexts.Body("CHAPTER 1. Loomings.\nCall me Ishmael.\n"));
        Assert.Equal("rest", BookTexts.Body("*** START OF X ***\nrest"));
        // Stars inside a line are not a marker.
        Assert.Equal("a *** END OF b", BookTexts.Body("a *** END OF b"));
    }

    [DataFact]
    public void RealBooksLoseTheirLicenceAndKeepTheirText()
    {
        var tokenizer = Tokenizer.Load(TestData.File("models", "stories260K", "tok512.bin"));
        string path = TestData.File("text", "gutenberg", "pg16215_jack_sheppard_ainsworth.txt");
        string body = BookTexts.Body(File.ReadAllText(path));
        Assert.DoesNotContain("PROJECT GUTENBERG EBOOK", body);
        Assert.Contains("END OF THE FIRST EPOCH.", body);   // a chapter end, not the licence's marker
        Assert.True(body.Length > 500_000, $"body of {body.Length} characters");
        var ids = BookTexts.Tokens(path, tokenizer, 1000);
        Assert.All(ids, id => Assert.InRange(id, 0, tokenizer.VocabSize - 1));
        var error = Assert.Throws<UioLlm.Training.Data.DataFormatException>(() => BookTexts.Tokens(path, tokenizer, int.MaxValue));
        Assert.Contains(path, error.Message);
        Assert.Throws<UioLlm.Training.Data.DataFormatException>(() => BookTexts.Tokens(Path.Combine(root, "missing.txt"), tokenizer, 1));
    }

    [Fact]
    public void ACachedRowIsReadBackOnlyUnderItsFingerprint()
    {
        string file = Path.Combine(root, "row", "row.json");
        var row = new BooksRow("uio", "uio", 1040, 0.25, 4096, 3.5,
            [new BooksCell(1, 64, 40.5, 41.25, false), new BooksCell(2, 128, 39.0, 38.5, true)]);
        BooksRowFile.Write(file, "fingerprint-a", row);
        var back = BooksRowFile.TryRead(file, "fingerprint-a");
        Assert.NotNull(back);
        Assert.Equal(row with { Cells = [] }, back with { Cells = [] });
        Assert.Equal(row.Cells, back.Cells);
        Assert.Null(BooksRowFile.TryRead(file, "fingerprint-b"));
        // A reference row has no training loss.
        BooksRowFile.Write(file, "f", row with { FinalLoss = double.NaN });
        Assert.True(double.IsNaN(BooksRowFile.TryRead(file, "f")!.FinalLoss));
        File.WriteAllText(file, "{ \"fingerprint\": \"f\", \"cells\": [");
        Assert.Null(BooksRowFile.TryRead(file, "f"));   // damaged: measured again, never trusted

        string passkey = Path.Combine(root, "passkey", "row.json");
        var compareRow = new CompareRow("rmt (rmt:segment=32)", "rmt:segment=32", 16512, 0.09, 131584, 6.95,
            [new DemoDistanceAccuracy("rmt (rmt:segment=32)", 1, 65, 3, 40), new DemoDistanceAccuracy("rmt (rmt:segment=32)", 2, 97, 0, 40)]);
        CompareRowFile.Write(passkey, "g", compareRow);
        var read = CompareRowFile.TryRead(passkey, "g");
        Assert.NotNull(read);
        Assert.Equal(compareRow.Distances, read.Distances);
        Assert.Equal(compareRow.FinalLoss, read.FinalLoss);
        Assert.Null(CompareRowFile.TryRead(passkey, "h"));
    }

    [Fact]
    public void DefaultSpecsFitTheWindowAndTheLongestDocument()
    {
        Assert.Equal("pi-finetune:factor=16", MethodSpecs.Default("pi-finetune", 64, 32, 1, 1024));
        Assert.Equal("pi-finetune:factor=32", MethodSpecs.Default("pi-finetune", 64, 32, 1, 1025));
        Assert.Equal("activation-beacon:window=32:ratio-min=8:ratio-max=8:ratio=8", MethodSpecs.Default("activation-beacon", 64, 32, 4, 1024));
        Assert.Equal("rmt:segment=32:memory=4", MethodSpecs.Default("rmt", 64, 32, 4, 1024));
        Assert.Equal("longnet:segment=32:range=1024", MethodSpecs.Default("longnet", 64, 32, 1, 1000));
        Assert.Equal("uio", MethodSpecs.Default("uio", 64, 32, 1, 1000));
        Assert.Equal(["uio", "rmt:segment=8:memory=1", "rmt:memory=2"],
            (BooksSettings.Quick with { Methods = ["uio", "rmt", "rmt:memory=2"] }).Specs());
    }

    [Fact]
    public void SettingsThatCannotWorkAreRefusedByName()
    {
        Assert.Contains("held-out", Assert.Throws<ArgumentException>(() => (BooksSettings.Quick with { HeldOutBook = BooksSettings.Quick.TrainBooks[0] }).Validate()).Message);
        Assert.Contains("segments", Assert.Throws<ArgumentException>(() => (BooksSettings.Quick with { Window = 20 }).Validate()).Message);
        Assert.Equal("TrainSteps", Assert.Throws<ArgumentOutOfRangeException>(() => (BooksSettings.Quick with { TrainSteps = 0 }).Validate()).ParamName);
    }

    [DataFact]
    public void QuickBooksComparisonTrainsReadsTheHeldOutBookAndCachesItsRows()
    {
        string folder = Path.Combine(root, "books");
        string[] args = ["compare", "--books", "--quick", "--out", folder, "--threads", "2", "--methods", "uio,rmt,activation-beacon", "--data", TestData.Root!];
        var (code, output, error) = CliHarness.Run(args);
        Assert.True(code == 0, error + output);
        Assert.Equal("", error);
        var csv = File.ReadAllLines(Path.Combine(folder, "books.csv"));
        Assert.Equal(BooksCsv.Header, csv[0]);
        Assert.Equal(1 + 6 * 2, csv.Length);   // base, full attention, segments alone, uio, rmt, activation beacon at 1x and 2x
        var cells = csv.Skip(1).Select(l => l.Split(',')).ToList();
        // At 1x the sliding window and full attention read the same window, and the last window is the whole prefix.
        var baseOne = cells.Single(c => c[0].StartsWith("base (sliding", StringComparison.Ordinal) && c[2] == "1");
        var fullOne = cells.Single(c => c[0].StartsWith("base (full", StringComparison.Ordinal) && c[2] == "1");
        Assert.Equal(baseOne[4], fullOne[4]);
        Assert.Equal(baseOne[4], baseOne[5]);
        // Full attention past the window is marked as extrapolation; the sliding window never is.
        Assert.Equal("1", cells.Single(c => c[0].StartsWith("base (full", StringComparison.Ordinal) && c[2] == "2")[6]);
        Assert.All(cells.Where(c => c[0].StartsWith("base (sliding", StringComparison.Ordinal)), c => Assert.Equal("0", c[6]));
        foreach (var c in cells)
        {
            double ppl = double.Parse(c[4], System.Globalization.CultureInfo.InvariantCulture);
            Assert.InRange(ppl, 1.0, 2.0 * 512);   // a barely trained base over 512 pieces
        }
        Assert.Contains("activation-beacon", output);   // the books base has no local layers: the beacon runs here
        Assert.True(File.Exists(Path.Combine(folder, "books.svg")));
        Assert.True(File.Exists(Path.Combine(folder, "books", "uio", "adapter", "adapter_config.json")));

        // A second run reads every row from the cache and writes the same table.
        var (again, output2, error2) = CliHarness.Run(args);
        Assert.True(again == 0, error2 + output2);
        Assert.Contains("read from the cache", output2);
        Assert.DoesNotContain("loss", output2.Split('\n').Where(l => l.StartsWith('[')).Aggregate("", (a, b) => a + b));
        Assert.Equal(csv, File.ReadAllLines(Path.Combine(folder, "books.csv")));
    }

    [Fact]
    public void BadDataIsAUsageError()
    {
        var (code, _, error) = CliHarness.Run("compare", "--books", "--quick", "--out", Path.Combine(root, "x"), "--data", Path.Combine(root, "no-such-folder"));
        Assert.Equal(2, code);
        Assert.Contains("--data", error);
        Assert.Contains("no-such-folder", error);
        (code, _, error) = CliHarness.Run("compare", "--quick", "--out", Path.Combine(root, "x"), "--data", root);
        Assert.Equal(2, code);
        Assert.Contains("--books", error);
    }
}
