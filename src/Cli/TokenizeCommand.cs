using UioLlm.Model.Tokenizers;

namespace UioLlm.Cli;

/// <summary>`uio tokenize`: text to token ids (one line, space-separated), or ids back to text with --decode.</summary>
internal static class TokenizeCommand
{
    public static int Run(string tokenizerPath, string? text, string? file, bool noBos, bool decode, TextWriter output, TextWriter error) =>
        CliSupport.Guarded("tokenize", error, () =>
        {
            if ((text is null) == (file is null)) throw new UsageException("give exactly one of --text or --file");
            string input = text ?? File.ReadAllText(CliSupport.RequireExists(file!, "--file"));
            // cl100k_base / o200k_base name tiktoken encodings (shipped in packages) unless such a file exists.
            bool tiktoken = TiktokenEncoding.Names.Contains(tokenizerPath) && !File.Exists(tokenizerPath) && !Directory.Exists(tokenizerPath);
            var tokenizer = Tokenizer.Load(tiktoken ? tokenizerPath : CliSupport.RequireExists(tokenizerPath, "--tokenizer"));
            if (decode)
            {
                var ids = new List<int>();
                foreach (var part in input.Split((char[])[' ', '\n', '\r', '\t', ','], StringSplitOptions.RemoveEmptyEntries))
                {
                    if (!int.TryParse(part, out int id) || id < 0 || id >= tokenizer.VocabSize)
                        throw new UsageException($"--decode: '{part}' is not a token id in [0, {tokenizer.VocabSize})");
                    ids.Add(id);
                }
                output.WriteLine(tokenizer.Decode(ids.ToArray()));
                return 0;
            }
            output.WriteLine(string.Join(' ', tokenizer.Encode(input, addBos: !noBos)));
            return 0;
        });
}
