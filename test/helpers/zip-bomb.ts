// Zips written by hand, for archives no honest packer makes: entries that inflate
// to gigabytes from a few hundred kilobytes, and entries whose declared size lies.
import { constants, crc32, deflateRawSync } from 'node:zlib';

export interface RawZipEntry {
  name: string;
  /** The raw deflate stream stored for the entry. */
  deflated: Buffer;
  /** CRC-32 of the inflated bytes. */
  crc: number;
  /** The uncompressed size written into the headers (true or not). */
  declaredSize: number;
  /** Unix mode for the external attributes (default: a regular 0644 file). */
  mode?: number;
}

const MiB = 1024 * 1024;

/**
 * A raw deflate stream of `mib` MiB of zeros, built in milliseconds: one MiB is
 * deflated with a full flush (no back-references across it, byte aligned), repeated,
 * then closed with an empty final block. About 1 KiB per MiB.
 */
export function deflatedZeros(mib: number): { deflated: Buffer; crc: number; size: number } {
  const zeros = Buffer.alloc(MiB);
  const block = deflateRawSync(zeros, { level: 9, finishFlush: constants.Z_FULL_FLUSH });
  const finalEmptyBlock = Buffer.from([0x03, 0x00]); // BFINAL=1, fixed Huffman, end-of-block
  let crc = 0;
  for (let i = 0; i < mib; i++) crc = crc32(zeros, crc);
  return {
    deflated: Buffer.concat([...Array.from({ length: mib }, () => block), finalEmptyBlock]),
    crc,
    size: mib * MiB,
  };
}

/** A small file as an entry, sized honestly. */
export function fileEntry(name: string, text: string): RawZipEntry {
  const data = Buffer.from(text, 'utf8');
  return { name, deflated: deflateRawSync(data), crc: crc32(data), declaredSize: data.length };
}

/** A zip of these entries (deflate, unix attributes, no zip64: sizes below 4 GiB). */
export function writeRawZip(entries: readonly RawZipEntry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(8, 8); // deflate
    local.writeUInt16LE(0, 10); // time
    local.writeUInt16LE(0x21, 12); // 1980-01-01
    local.writeUInt32LE(e.crc >>> 0, 14);
    local.writeUInt32LE(e.deflated.length, 18);
    local.writeUInt32LE(e.declaredSize, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4); // made by unix
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(8, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(e.crc >>> 0, 16);
    central.writeUInt32LE(e.deflated.length, 20);
    central.writeUInt32LE(e.declaredSize, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(((e.mode ?? 0o100644) << 16) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, e.deflated);
    centrals.push(central, name);
    offset += local.length + name.length + e.deflated.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** A charm whose `payload.bin` inflates to `mib` MiB of zeros; `declaredMib` is what its headers claim. */
export function zipBombCharm(mib: number, declaredMib = mib): Buffer {
  const zeros = deflatedZeros(mib);
  return writeRawZip([
    fileEntry('metadata.yaml', 'name: bomb\nsummary: inflates to a lot of zeros\n'),
    { name: 'payload.bin', deflated: zeros.deflated, crc: zeros.crc, declaredSize: declaredMib * MiB },
  ]);
}
