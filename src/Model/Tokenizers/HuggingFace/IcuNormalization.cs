using System.Runtime.InteropServices;
using System.Text;

namespace UioLlm.Model.Tokenizers.HuggingFace;

/// <summary>
/// Unicode normalization that works whatever the process's globalization mode: .NET's own
/// <see cref="string.Normalize(NormalizationForm)"/> when it works (it returns its input unchanged under
/// InvariantGlobalization, which this project runs with), else ICU's unorm2 called directly from libicuuc (which
/// .NET itself uses on Linux), looked up by versioned symbol name.
/// </summary>
internal static unsafe class UnicodeNormalization
{
    private static readonly bool ManagedWorks = ProbeManaged();
    private static readonly Icu? IcuFunctions = ManagedWorks ? null : Icu.TryLoad();

    /// <summary>Null when normalization is available, else why not.</summary>
    public static string? Unavailable => ManagedWorks || IcuFunctions is not null ? null
        : "this process runs with InvariantGlobalization, where .NET does not normalize, and no ICU library (libicuuc) was found to do it";

    public static string Normalize(string text, NormalizationForm form)
    {
        if (ManagedWorks) return text.IsNormalized(form) ? text : text.Normalize(form);
        var icu = IcuFunctions ?? throw new InvalidOperationException(Unavailable);
        return icu.Normalize(text, form);
    }

    private static bool ProbeManaged()
    {
        try { return "e\u0301".Normalize(NormalizationForm.FormC) == "\u00E9"; }
        catch (PlatformNotSupportedException) { return false; }
    }

    private sealed class Icu
    {
        private readonly delegate* unmanaged<int*, nint>[] instances = new delegate* unmanaged<int*, nint>[4];
        private readonly delegate* unmanaged<nint, char*, int, char*, int, int*, int> normalize;

        private Icu(nint library, string suffix)
        {
            string[] names = ["unorm2_getNFCInstance", "unorm2_getNFDInstance", "unorm2_getNFKCInstance", "unorm2_getNFKDInstance"];
            for (int i = 0; i < 4; i++) instances[i] = (delegate* unmanaged<int*, nint>)NativeLibrary.GetExport(library, names[i] + suffix);
            normalize = (delegate* unmanaged<nint, char*, int, char*, int, int*, int>)NativeLibrary.GetExport(library, "unorm2_normalize" + suffix);
        }

        public static Icu? TryLoad()
        {
            for (int version = 90; version >= 50; version--)
            {
                if (!NativeLibrary.TryLoad($"libicuuc.so.{version}", out nint library)) continue;
                foreach (string suffix in new[] { $"_{version}", "" })
                    if (NativeLibrary.TryGetExport(library, "unorm2_normalize" + suffix, out _)) return new Icu(library, suffix);
            }
            return null;
        }

        public string Normalize(string text, NormalizationForm form)
        {
            int index = form switch
            {
                NormalizationForm.FormC => 0, NormalizationForm.FormD => 1, NormalizationForm.FormKC => 2, _ => 3,
            };
            int error = 0;
            nint normalizer = instances[index](&error);
            if (error > 0) throw new InvalidOperationException($"ICU could not open the {form} normalizer (error {error})");
            int capacity = text.Length * 3 + 16; // NFKD of one character is at most 18 characters; this covers real text, and U_BUFFER_OVERFLOW_ERROR retries
            while (true)
            {
                var buffer = new char[capacity];
                error = 0;
                int length;
                fixed (char* src = text)
                fixed (char* dst = buffer)
                    length = normalize(normalizer, src, text.Length, dst, capacity, &error);
                if (error == 15 /* U_BUFFER_OVERFLOW_ERROR */) { capacity = length + 16; continue; }
                if (error > 0) throw new InvalidOperationException($"ICU {form} normalization failed (error {error})");
                return new string(buffer, 0, length);
            }
        }
    }
}
