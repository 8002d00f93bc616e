// The browser phone's microphone capture, run on the audio thread: the input (at the
// AudioContext's rate, 16000 Hz) cut into 20 ms frames of PCM16 little-endian (320 samples,
// 640 bytes), each posted to the page, which sends it to the bridge.

const FRAME = 320;

class TelebridgeCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true; // no input connected (yet): keep the node alive
    for (let i = 0; i < channel.length; i++) {
      const s = Math.max(-1, Math.min(1, channel[i]));
      this.frame[this.filled++] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
      if (this.filled === FRAME) {
        const buffer = this.frame.buffer;
        this.port.postMessage(buffer, [buffer]);
        this.frame = new Int16Array(FRAME);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("telebridge-capture", TelebridgeCapture);
