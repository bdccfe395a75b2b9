using System.Text.Json;

namespace UioLlm.Training.Data.Synthetic;

/// <summary>
/// The passkey prompt strings (llama.cpp's passkey example): prompt = Prefix + filler units with the
/// needle (NeedleTemplate with "{passkey}" filled in) before unit i_pos + Suffix; the answer is the passkey.
/// </summary>
public sealed record PasskeyTemplate(string Prefix, string JunkUnit, string NeedleTemplate, string Suffix)
{
    /// <summary>The placeholder NeedleTemplate must contain.</summary>
    public const string Placeholder = "{passkey}";

    /// <summary>The needle for <paramref name="passkey"/>.</summary>
    public string Needle(string passkey) => NeedleTemplate.Replace(Placeholder, passkey, StringComparison.Ordinal);

    /// <summary>
    /// Reads the "passkey_llama_cpp" object (prefix, junk_unit, needle_template, suffix) of a templates file
    /// such as longctx/passkey_and_niah_templates.json.
    /// </summary>
    /// <exception cref="DataFormatException">The file is not JSON or lacks one of the fields.</exception>
    public static PasskeyTemplate Load(string path, string section = "passkey_llama_cpp")
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"passkey template file not found: {path}", path);
        JsonDocument json;
        try
        {
            json = JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new DataFormatException(path, null, $"not valid JSON ({e.Message})");
        }
        using (json)
        {
            if (json.RootElement.ValueKind != JsonValueKind.Object || !json.RootElement.TryGetProperty(section, out var node) || node.ValueKind != JsonValueKind.Object)
                throw new DataFormatException(path, null, $"expected a top-level object with a \"{section}\" object");
            var template = new PasskeyTemplate(Field(path, section, node, "prefix"), Field(path, section, node, "junk_unit"),
                Field(path, section, node, "needle_template"), Field(path, section, node, "suffix"));
            if (!template.NeedleTemplate.Contains(Placeholder, StringComparison.Ordinal))
                throw new DataFormatException(path, null, $"{section}.needle_template must contain {Placeholder}");
            if (template.JunkUnit.Length == 0) throw new DataFormatException(path, null, $"{section}.junk_unit is empty");
            return template;
        }
    }

    private static string Field(string path, string section, JsonElement node, string name)
    {
        if (!node.TryGetProperty(name, out var value) || value.ValueKind != JsonValueKind.String)
            throw new DataFormatException(path, null, $"{section}.{name} must be a string");
        return value.GetString()!;
    }
}
