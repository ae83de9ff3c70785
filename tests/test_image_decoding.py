"""Image decoding on awkward and hostile files (LoadTieredImage, to_rgb,
ADMCenterCrop), each written here with PIL or by hand."""
import logging
import resource
import struct
import zlib

import numpy as np
import pytest
from mmengine.logging import MMLogger
from PIL import Image

from finediffusion.datasets import ADMCenterCrop, LoadTieredImage
from test_datasets import reference_center_crop


def load(path, **kwargs):
    return LoadTieredImage(**kwargs)(dict(gt_path=str(path)))


def test_16_bit_grayscale_png_is_scaled_to_8_bits(tmp_path):
    values = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16)
    path = tmp_path / 'deep.png'
    Image.fromarray(values.reshape(64, 64)).save(path)
    assert Image.open(path).mode == 'I;16'
    out = load(path)['gt']
    expected = np.round(values.reshape(64, 64) / 257).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], expected)
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize('mode,key,kept', [
    ('L', 7, 90),
    ('RGB', (1, 2, 3), (90, 80, 70)),
    ('I;16', 300, 90 * 257),
    ('P', 1, 2),
])
def test_colour_key_transparency_goes_over_white(tmp_path, mode, key, kept):
    """A tRNS colour key (or a palette's transparent entry) marks the
    pixels of one value transparent: they come out white, the others
    unchanged."""
    if mode == 'I;16':
        array = np.full((4, 6), kept, np.uint16)
        array[:, :3] = key
        image = Image.fromarray(array)
    elif mode == 'P':
        image = Image.new('P', (6, 4), kept)
        image.putpalette([0, 0, 0, 255, 0, 0, 90, 80, 70] + [0] * 759)
        image.paste(key, (0, 0, 3, 4))
    else:
        image = Image.new(mode, (6, 4), kept)
        image.paste(key, (0, 0, 3, 4))
    path = tmp_path / f'{mode.replace(";", "")}.png'
    image.save(path, transparency=key)
    assert 'transparency' in Image.open(path).info
    out = load(path)['gt']
    assert (out[:, :3] == 255).all()
    rest = (90, 80, 70) if mode in ('RGB', 'P') else (90, ) * 3
    assert (out[:, 3:] == rest).all()


def png_header(width, height):
    """A PNG of a signature, an IHDR claiming width x height (8-bit RGB)
    and an empty IDAT and IEND: 57 bytes."""
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data +
                struct.pack('>I', zlib.crc32(kind + data)))
    return (b'\x89PNG\r\n\x1a\n' +
            chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0,
                                       0, 0)) + chunk(b'IDAT', b'') +
            chunk(b'IEND', b''))


def test_decompression_bomb_is_skipped_and_named(tmp_path):
    bomb = tmp_path / 'bomb.png'
    bomb.write_bytes(png_header(30000, 30000))
    assert len(bomb.read_bytes()) == 57
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bomb)
    transform = LoadTieredImage(max_failures=1)
    logger, records = MMLogger.get_current_instance(), []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        assert transform(dict(gt_path=str(bomb))) is None
    finally:
        logger.removeHandler(handler)
    assert transform.failures == [str(bomb)]
    assert records[0].getMessage().startswith(
        f'skipped unreadable image {bomb} (DecompressionBombError')


def _address_space() -> int:
    with open('/proc/self/status') as f:
        line = next(line for line in f if line.startswith('VmSize:'))
    return int(line.split()[1]) * 1024


@pytest.mark.parametrize('size', [(4000, 1), (1, 2000)])
def test_extreme_aspect_ratio_needs_memory_of_the_output(size):
    """A 4000 x 1 strip resized whole to 256 px would take 786 MB (and
    twice that in PIL's two passes); the crop may take 200 MB more than the
    process holds."""
    array = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3),
                                              dtype=np.uint8)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS,
                       (_address_space() + 200 * 2**20, hard))
    try:
        out = ADMCenterCrop(256)(dict(gt=array))['gt']
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert out.shape == (256, 256, 3)
    # ADM's resize of the strip along its length only (a few MB): across
    # it, every output line repeats the strip's one line of pixels.
    long_side = round(max(size) * 256 / min(size))
    reference = np.asarray(Image.fromarray(array).resize(
        (long_side, 1) if size[1] == 1 else (1, long_side), Image.BICUBIC))
    start = (long_side - 256) // 2
    if size[1] == 1:
        expected = np.broadcast_to(reference[:, start:start + 256], out.shape)
    else:
        expected = np.broadcast_to(reference[start:start + 256], out.shape)
    assert np.abs(out.astype(int) - expected).max() <= 1


@pytest.mark.parametrize('size', [(1030, 257), (5000, 600), (300, 1300)])
def test_central_region_resize_matches_adm_to_a_level(size):
    """Beyond max_aspect only the central region is resized; it samples the
    source pixels ADM's whole resize does, so the crop agrees to rounding."""
    array = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3),
                                              dtype=np.uint8)
    out = ADMCenterCrop(256)(dict(gt=array.copy()))['gt']
    reference = reference_center_crop(Image.fromarray(array), 256)
    difference = np.abs(out.astype(int) - reference)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01
