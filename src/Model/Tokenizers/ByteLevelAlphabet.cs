namespace UioLlm.Model.Tokenizers;

/// <summary>
/// GPT-2's reversible map between the 256 byte values and printable characters: printable Latin-1 bytes
/// ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves, the other 68 bytes to U+0100, U+0101, ... in byte order.
/// </summary>
public static class ByteLevelAlphabet
{
    private static readonly char[] ByteToChar = BuildByteToChar();
    private static readonly Dictionary<char, byte> CharToByte = BuildCharToByte();

    /// <summary>The character standing for byte <paramref name="b"/>.</summary>
    public static char ToChar(byte b) => ByteToChar[b];

    /// <summary>The byte a character stands for, if it is one of the 256 alphabet characters.</summary>
    public static bool TryToByte(char c, out byte b) => CharToByte.TryGetValue(c, out b);

    private static bool MapsToItself(int b) => b is >= '!' and <= '~' or >= '¡' and <= '¬' or >= '®' and <= 'ÿ';

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
            map[b] = MapsToItself(b) ? (char)b : (char)next++;
        return map;
    }

    private static Dictionary<char, byte> BuildCharToByte()
    {
        var map = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++) map[ByteToChar[b]] = (byte)b;
        return map;
    }
}
