using System.Security.Cryptography;
using System.Text;
using UioLlm.Model.Tokenizers;

namespace UioLlm.Training.Data;

/// <summary>
/// What makes two tokenizers produce the same ids, for cache keys: vocabulary size, BOS/EOS ids and a
/// SHA-256 of every vocabulary piece. The implementation type is left out on purpose, so a wrapper around
/// a tokenizer (counting, logging) shares its cache.
/// </summary>
public static class TokenizerIdentity
{
    /// <summary>A hex fingerprint of <paramref name="tokenizer"/>.</summary>
    public static string Of(ITokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Append(hash, $"{tokenizer.VocabSize}|{tokenizer.BosId}|{tokenizer.EosId}|");
        for (int id = 0; id < tokenizer.VocabSize; id++)
        {
            Append(hash, tokenizer.TokenText(id));
            Append(hash, "\0");
        }
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    private static void Append(IncrementalHash hash, string text) => hash.AppendData(Encoding.UTF8.GetBytes(text));
}
