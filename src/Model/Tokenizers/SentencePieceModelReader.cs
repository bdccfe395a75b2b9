namespace UioLlm.Model.Tokenizers;

/// <summary>
/// Reads a SentencePiece tokenizer.model (a serialized sentencepiece.ModelProto) into a <see cref="SentencePieceVocab"/>.
/// Only the fields an encoder needs are read; the rest are skipped.
/// </summary>
internal static class SentencePieceModelReader
{
    // ModelProto fields.
    private const int PiecesField = 1, TrainerSpecField = 2, NormalizerSpecField = 3;
    // TrainerSpec.ModelType.BPE
    private const int BpeModelType = 2, UnigramModelType = 1;

    /// <summary>trainer_spec.model_type of a tokenizer.model (1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR), without validating the rest.</summary>
    public static int ModelType(ReadOnlySpan<byte> data, string path)
    {
        var reader = new ProtobufReader(data, path, "ModelProto");
        int type = UnigramModelType;
        while (!reader.AtEnd)
        {
            var (field, wire) = reader.ReadKey();
            if (field == TrainerSpecField && wire == 2) type = ReadTrainerSpec(reader.ReadBytes(), path).ModelType;
            else reader.Skip(wire);
        }
        return type;
    }

    public static SentencePieceVocab Read(string path)
    {
        byte[] data = File.ReadAllBytes(path);
        return Parse(data, path);
    }

    /// <summary>
    /// Parses a ModelProto. With <paramref name="unigram"/> the model must be UNIGRAM (encoded by
    /// <see cref="UnigramTokenizer"/>, which needs only the pieces and special ids from here), otherwise BPE.
    /// </summary>
    public static SentencePieceVocab Parse(ReadOnlySpan<byte> data, string path, bool unigram = false)
    {
        var pieces = new List<string>();
        var scores = new List<float>();
        var types = new List<SentencePieceType>();
        var trainer = new TrainerSpec();
        var normalizer = new NormalizerSpec();
        var reader = new ProtobufReader(data, path, "ModelProto");
        while (!reader.AtEnd)
        {
            var (field, wire) = reader.ReadKey();
            switch (field)
            {
                case PiecesField:
                    reader.Expect(field, wire, 2, "pieces");
                    ReadPiece(reader.ReadBytes(), path, pieces.Count, pieces, scores, types);
                    break;
                case TrainerSpecField:
                    reader.Expect(field, wire, 2, "trainer_spec");
                    trainer = ReadTrainerSpec(reader.ReadBytes(), path);
                    break;
                case NormalizerSpecField:
                    reader.Expect(field, wire, 2, "normalizer_spec");
                    normalizer = ReadNormalizerSpec(reader.ReadBytes(), path);
                    break;
                default:
                    reader.Skip(wire);
                    break;
            }
        }
        if (pieces.Count == 0) throw new ModelFormatException(path, "not a SentencePiece model: no pieces (field 1 of ModelProto)");
        if (unigram && trainer.ModelType != UnigramModelType)
            throw new ModelFormatException(path, $"trainer_spec.model_type is {ModelTypeName(trainer.ModelType)}, expected UNIGRAM");
        if (!unigram && trainer.ModelType != BpeModelType)
            throw new ModelFormatException(path, $"trainer_spec.model_type is {ModelTypeName(trainer.ModelType)}, expected BPE (only BPE models are supported)");
        if (normalizer.HasCharsMap && !unigram)
            throw new ModelFormatException(path, $"normalizer_spec '{normalizer.Name}' has a precompiled_charsmap; only the identity normalizer is supported");
        if (trainer.TreatWhitespaceAsSuffix && !unigram)
            throw new ModelFormatException(path, "trainer_spec.treat_whitespace_as_suffix is true; only prefix whitespace is supported");

        var vocab = new SentencePieceVocab
        {
            Source = path,
            Pieces = pieces.ToArray(),
            Scores = scores.ToArray(),
            Types = types.ToArray(),
            UnkId = trainer.UnkId,
            BosId = trainer.BosId,
            EosId = trainer.EosId,
            ByteFallback = trainer.ByteFallback,
            AddDummyPrefix = normalizer.AddDummyPrefix,
            RemoveExtraWhitespaces = normalizer.RemoveExtraWhitespaces,
            EscapeWhitespaces = normalizer.EscapeWhitespaces,
            UnkSurface = trainer.UnkSurface,
        };
        vocab.Validate();
        return vocab;
    }

    private static string ModelTypeName(int type) => type switch
    {
        1 => "UNIGRAM", 2 => "BPE", 3 => "WORD", 4 => "CHAR", _ => type.ToString(),
    };

    private static void ReadPiece(ReadOnlySpan<byte> bytes, string path, int index,
        List<string> pieces, List<float> scores, List<SentencePieceType> types)
    {
        string? piece = null;
        float score = 0;
        int type = (int)SentencePieceType.Normal;
        var reader = new ProtobufReader(bytes, path, $"SentencePiece #{index}");
        while (!reader.AtEnd)
        {
            var (field, wire) = reader.ReadKey();
            switch (field)
            {
                case 1: reader.Expect(field, wire, 2, "piece"); piece = reader.ReadString(); break;
                case 2: reader.Expect(field, wire, 5, "score"); score = reader.ReadFloat(); break;
                case 3: reader.Expect(field, wire, 0, "type"); type = reader.ReadInt32(); break;
                default: reader.Skip(wire); break;
            }
        }
        if (piece is null) throw new ModelFormatException(path, $"pieces[{index}] has no piece string");
        pieces.Add(piece);
        scores.Add(score);
        types.Add((SentencePieceType)type);
    }

    private sealed class TrainerSpec
    {
        public int ModelType = 1; // proto default UNIGRAM
        public bool ByteFallback, TreatWhitespaceAsSuffix;
        public int UnkId = 0, BosId = 1, EosId = 2;
        public string UnkSurface = " \u2047 ";
    }

    private static TrainerSpec ReadTrainerSpec(ReadOnlySpan<byte> bytes, string path)
    {
        var spec = new TrainerSpec();
        var reader = new ProtobufReader(bytes, path, "TrainerSpec");
        while (!reader.AtEnd)
        {
            var (field, wire) = reader.ReadKey();
            switch (field)
            {
                case 3: reader.Expect(field, wire, 0, "model_type"); spec.ModelType = reader.ReadInt32(); break;
                case 24: reader.Expect(field, wire, 0, "treat_whitespace_as_suffix"); spec.TreatWhitespaceAsSuffix = reader.ReadBool(); break;
                case 35: reader.Expect(field, wire, 0, "byte_fallback"); spec.ByteFallback = reader.ReadBool(); break;
                case 40: reader.Expect(field, wire, 0, "unk_id"); spec.UnkId = reader.ReadInt32(); break;
                case 41: reader.Expect(field, wire, 0, "bos_id"); spec.BosId = reader.ReadInt32(); break;
                case 42: reader.Expect(field, wire, 0, "eos_id"); spec.EosId = reader.ReadInt32(); break;
                case 44: reader.Expect(field, wire, 2, "unk_surface"); spec.UnkSurface = reader.ReadString(); break;
                default: reader.Skip(wire); break;
            }
        }
        return spec;
    }

    private sealed class NormalizerSpec
    {
        public string Name = "";
        public bool HasCharsMap;
        // proto defaults
        public bool AddDummyPrefix = true, RemoveExtraWhitespaces = true, EscapeWhitespaces = true;
    }

    private static NormalizerSpec ReadNormalizerSpec(ReadOnlySpan<byte> bytes, string path)
    {
        var spec = new NormalizerSpec();
        var reader = new ProtobufReader(bytes, path, "NormalizerSpec");
        while (!reader.AtEnd)
        {
            var (field, wire) = reader.ReadKey();
            switch (field)
            {
                case 1: reader.Expect(field, wire, 2, "name"); spec.Name = reader.ReadString(); break;
                case 2: reader.Expect(field, wire, 2, "precompiled_charsmap"); spec.HasCharsMap = reader.ReadBytes().Length > 0; break;
                case 3: reader.Expect(field, wire, 0, "add_dummy_prefix"); spec.AddDummyPrefix = reader.ReadBool(); break;
                case 4: reader.Expect(field, wire, 0, "remove_extra_whitespaces"); spec.RemoveExtraWhitespaces = reader.ReadBool(); break;
                case 5: reader.Expect(field, wire, 0, "escape_whitespaces"); spec.EscapeWhitespaces = reader.ReadBool(); break;
                default: reader.Skip(wire); break;
            }
        }
        return spec;
    }
}
